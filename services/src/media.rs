//! The media library: uploads are sniffed from their magic bytes, size-checked per kind,
//! thumbnailed (images), stored in the object store under server-chosen `<tenant>/<uuid>` keys,
//! indexed in `media_assets`, and attached to products in order (`product_media`).
//!
//! Storing and indexing are one compensated step: nothing reaches the database unless every
//! object was stored, and stored objects are deleted again when the insert fails. The step runs
//! in its own task, so a client that disconnects or times out cannot leave it half done.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::media::{
    self, ByteRange, MediaError, MediaFormat, MediaKind, MediaLimits, SNIFF_LEN,
    THUMBNAIL_LONG_SIDE, byte_range,
};
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::config::MediaConfig;
use crate::page::{Page, PageArgs};
use crate::{Core, ServiceError, ServiceResult};

/// Most media one product may show.
pub const MAX_PRODUCT_MEDIA: usize = 50;
/// Longest alt text, in characters.
pub const MAX_ALT_CHARS: usize = 500;

/// Decoding a 40-megapixel image takes ~160 MB; on a small machine a burst of uploads must queue
/// rather than exhaust memory.
static DECODE_SLOTS: Semaphore = Semaphore::const_new(2);

/// A stored media asset as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaAsset {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub kind: MediaKind,
    pub content_type: String,
    pub byte_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub alt: Option<String>,
    pub has_thumbnail: bool,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

impl MediaAsset {
    /// Where the file is served (relative to the API's origin).
    pub fn url(&self) -> String {
        format!("/media/{}/{}", self.tenant_id, self.id)
    }

    pub fn thumbnail_url(&self) -> Option<String> {
        self.has_thumbnail.then(|| format!("{}/thumb", self.url()))
    }
}

/// An upload as received: the spooled file and the client's alt text. The client's file name and
/// content type are deliberately not part of it.
pub struct NewUpload {
    pub file: std::fs::File,
    pub alt: Option<String>,
}

/// The configured object store. Only a local directory today (see `config::S3_VARS`).
pub fn store(cfg: &MediaConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(s3) = &cfg.s3 {
        // object_store's S3 client runs on reqwest 0.13 with rustls and no provider of its
        // own: ring, the one provider in the build, is installed once for the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(s3.access_key_id.expose())
            .with_secret_access_key(s3.secret_access_key.expose());
        if let Some(endpoint) = &s3.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = b
            .build()
            .with_context(|| format!("opening S3 bucket {}", s3.bucket))?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(&cfg.dir)
        .with_context(|| format!("creating UPHUB_MEDIA_DIR {}", cfg.dir.display()))?;
    let fs = LocalFileSystem::new_with_prefix(&cfg.dir)
        .with_context(|| format!("opening UPHUB_MEDIA_DIR {}", cfg.dir.display()))?
        .with_automatic_cleanup(true);
    Ok(Arc::new(fs))
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn internal(e: impl Into<anyhow::Error>, what: &'static str) -> ServiceError {
    ServiceError::Internal(e.into().context(what))
}

fn parse_alt(alt: Option<String>) -> Result<Option<String>, InvalidInput> {
    let Some(alt) = alt else { return Ok(None) };
    let alt = alt.trim();
    if alt.chars().count() > MAX_ALT_CHARS {
        return Err(InvalidInput {
            field: "alt",
            message: format!("must be at most {MAX_ALT_CHARS} characters"),
        });
    }
    if alt.chars().any(char::is_control) {
        return Err(InvalidInput {
            field: "alt",
            message: "must not contain control characters".into(),
        });
    }
    Ok(Some(alt.to_string()).filter(|a| !a.is_empty()))
}

// ------------------------------------------------------------------ upload ---

/// What an upload turned out to be, ready to store.
enum Prepared {
    Image {
        format: MediaFormat,
        bytes: Bytes,
        width: u32,
        height: u32,
        sha256: String,
        thumbnail: Bytes,
        thumbnail_type: &'static str,
    },
    Video {
        format: MediaFormat,
        file: std::fs::File,
        size: u64,
    },
}

/// Runs blocking file and pixel work off the async runtime.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> ServiceResult<T> + Send + 'static,
) -> ServiceResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(e, what))?
}

/// Uploads one image or video. CATALOG_WRITE. A file that is not a format the library accepts,
/// too large for its kind, or an image too large or broken to decode is VALIDATION on `file`,
/// with nothing written anywhere.
pub async fn media_upload(
    core: &Core,
    ctx: &RequestCtx,
    upload: NewUpload,
) -> ServiceResult<MediaAsset> {
    require(ctx, Permission::CatalogWrite)?;
    let alt = parse_alt(upload.alt)?;
    let limits = core.cfg.media.limits;
    let file = upload.file;
    let (format, size, file) = blocking("inspecting an upload", move || {
        let mut file = file;
        let (format, size) = inspect(&mut file, &limits)?;
        Ok((format, size, file))
    })
    .await?;
    let prepared = match format.kind() {
        MediaKind::Image => {
            let _slot = DECODE_SLOTS
                .acquire()
                .await
                .map_err(|e| internal(e, "decode slots"))?;
            blocking("preparing an image", move || {
                prepare_image(file, size, format, &limits)
            })
            .await?
        }
        MediaKind::Video => Prepared::Video { format, file, size },
    };
    let (core, ctx) = (core.clone(), ctx.clone());
    tokio::spawn(async move { store_and_record(&core, &ctx, prepared, alt).await })
        .await
        .map_err(|e| internal(e, "media upload task"))?
}

/// Reads the size and first bytes of the spooled file and decides what it is.
fn inspect(file: &mut std::fs::File, limits: &MediaLimits) -> ServiceResult<(MediaFormat, u64)> {
    let size = file
        .metadata()
        .map_err(|e| internal(e, "upload metadata"))?
        .len();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.by_ref().take(SNIFF_LEN as u64).read_to_end(&mut head))
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .map_err(|e| internal(e, "reading an upload"))?;
    let format = media::classify(&head, size, limits).map_err(InvalidInput::from)?;
    Ok((format, size))
}

fn prepare_image(
    mut file: std::fs::File,
    size: u64,
    format: MediaFormat,
    limits: &MediaLimits,
) -> ServiceResult<Prepared> {
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut data)
        .map_err(|e| internal(e, "reading an upload"))?;
    let thumb = thumbnail(&data, format, limits)?;
    Ok(Prepared::Image {
        format,
        sha256: hex::encode(Sha256::digest(&data)),
        bytes: Bytes::from(data),
        width: thumb.width,
        height: thumb.height,
        thumbnail: thumb.bytes,
        thumbnail_type: thumb.content_type,
    })
}

struct Thumbnail {
    /// Of the original, after EXIF orientation.
    width: u32,
    height: u32,
    bytes: Bytes,
    content_type: &'static str,
}

/// Decodes an image (its header first, so oversized dimensions are refused before any pixel is
/// allocated), applies its EXIF orientation and renders a thumbnail: PNG when the image has an
/// alpha channel, JPEG otherwise.
fn thumbnail(data: &[u8], format: MediaFormat, limits: &MediaLimits) -> ServiceResult<Thumbnail> {
    use image::metadata::Orientation;
    use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
    let undecodable =
        |_: image::ImageError| ServiceError::Invalid(InvalidInput::from(MediaError::Undecodable));
    let image_format = match format {
        MediaFormat::Png => ImageFormat::Png,
        MediaFormat::Jpeg => ImageFormat::Jpeg,
        MediaFormat::WebP => ImageFormat::WebP,
        MediaFormat::Gif => ImageFormat::Gif,
        MediaFormat::Mp4 | MediaFormat::QuickTime | MediaFormat::WebM => {
            return Err(InvalidInput::from(MediaError::Undecodable).into());
        }
    };
    let mut reader = ImageReader::with_format(Cursor::new(data), image_format);
    // The decoder's own allocation cap backs up the pixel check below.
    reader.limits(image::Limits::default());
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (w, h) = decoder.dimensions();
    limits.check_dimensions(w, h).map_err(InvalidInput::from)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    img.apply_orientation(orientation);
    let (tw, th) = media::thumbnail_size(img.width(), img.height(), THUMBNAIL_LONG_SIDE);
    let small = img.thumbnail_exact(tw, th);
    let mut out = Vec::new();
    let content_type = if small.color().has_alpha() {
        small
            .to_rgba8()
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .map_err(|e| internal(e, "encoding a thumbnail"))?;
        "image/png"
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82)
            .encode_image(&small.to_rgb8())
            .map_err(|e| internal(e, "encoding a thumbnail"))?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        width: img.width(),
        height: img.height(),
        bytes: Bytes::from(out),
        content_type,
    })
}

/// A fresh object key of the tenant. Never derived from anything the client sent.
fn new_key(ctx: &RequestCtx) -> ObjectPath {
    ObjectPath::from(format!("{}/{}", ctx.tenant.0, Uuid::new_v4()))
}

/// Stores the objects, then indexes them; each step undoes the earlier ones when it fails.
async fn store_and_record(
    core: &Core,
    ctx: &RequestCtx,
    prepared: Prepared,
    alt: Option<String>,
) -> ServiceResult<MediaAsset> {
    let store = core.media_store.clone();
    let key = new_key(ctx);
    let mut asset = MediaAsset {
        tenant_id: ctx.tenant.0,
        id: Uuid::now_v7(),
        kind: MediaKind::Image,
        content_type: String::new(),
        byte_size: 0,
        width: None,
        height: None,
        alt,
        has_thumbnail: false,
        sha256: String::new(),
        created_at: core.now(),
    };
    let mut thumb: Option<(ObjectPath, &'static str)> = None;
    match prepared {
        Prepared::Image {
            format,
            bytes,
            width,
            height,
            sha256,
            thumbnail,
            thumbnail_type,
        } => {
            asset.content_type = format.content_type().into();
            asset.byte_size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
            asset.width = i32::try_from(width).ok();
            asset.height = i32::try_from(height).ok();
            asset.sha256 = sha256;
            asset.has_thumbnail = true;
            store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| internal(e, "storing an image"))?;
            let thumb_key = new_key(ctx);
            if let Err(e) = store.put(&thumb_key, PutPayload::from(thumbnail)).await {
                discard(store.as_ref(), &[&key]).await;
                return Err(internal(e, "storing a thumbnail"));
            }
            thumb = Some((thumb_key, thumbnail_type));
        }
        Prepared::Video { format, file, size } => {
            asset.kind = MediaKind::Video;
            asset.content_type = format.content_type().into();
            asset.byte_size = i64::try_from(size).unwrap_or(i64::MAX);
            asset.sha256 = put_streamed(store.as_ref(), &key, file).await?;
        }
    }
    if let Err(e) = insert(core, ctx, &asset, &key, thumb.as_ref()).await {
        let mut keys = vec![&key];
        keys.extend(thumb.as_ref().map(|t| &t.0));
        discard(store.as_ref(), &keys).await;
        return Err(e);
    }
    Ok(asset)
}

/// Streams a (possibly large) file into the store in parts, hashing it on the way.
async fn put_streamed(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    file: std::fs::File,
) -> ServiceResult<String> {
    let upload = store
        .put_multipart(key)
        .await
        .map_err(|e| internal(e, "starting a video upload"))?;
    let mut writer = WriteMultipart::new(upload);
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let step = async {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| internal(e, "reading a video upload"))?;
            if n > 0 {
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| internal(e, "storing a video"))?;
            }
            Ok::<usize, ServiceError>(n)
        }
        .await;
        match step {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                writer.write(&buf[..n]);
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "could not abort a video upload");
                }
                return Err(e);
            }
        }
    }
    writer
        .finish()
        .await
        .map_err(|e| internal(e, "storing a video"))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Best-effort removal of objects whose index row was never written.
async fn discard(store: &dyn ObjectStore, keys: &[&ObjectPath]) {
    for key in keys {
        if let Err(e) = store.delete(key).await {
            tracing::warn!(key = %key, error = %e, "could not delete an unindexed media object");
        }
    }
}

async fn insert(
    core: &Core,
    ctx: &RequestCtx,
    a: &MediaAsset,
    key: &ObjectPath,
    thumb: Option<&(ObjectPath, &'static str)>,
) -> ServiceResult<()> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    tx.execute_raw(stmt(
        "INSERT INTO media_assets (tenant_id, id, kind, content_type, byte_size, width, height, alt,
                                   storage_key, thumbnail_key, thumbnail_content_type, sha256,
                                   created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        vec![
            a.tenant_id.into(),
            a.id.into(),
            a.kind.as_str().into(),
            a.content_type.clone().into(),
            a.byte_size.into(),
            a.width.into(),
            a.height.into(),
            a.alt.clone().into(),
            key.to_string().into(),
            thumb.map(|t| t.0.to_string()).into(),
            thumb.map(|t| t.1.to_string()).into(),
            a.sha256.clone().into(),
            ctx.principal.actor_id().into(),
            DateTime::<FixedOffset>::from(a.created_at).into(),
        ],
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

// ------------------------------------------------------------------- reads ---

const COLS: &str =
    "m.tenant_id, m.id, m.kind, m.content_type, m.byte_size, m.width, m.height, m.alt,
                    m.thumbnail_key IS NOT NULL AS has_thumbnail, m.sha256, m.created_at";

fn asset_from(r: &sea_orm::QueryResult) -> ServiceResult<MediaAsset> {
    let kind: String = r.try_get("", "kind")?;
    Ok(MediaAsset {
        tenant_id: r.try_get("", "tenant_id")?,
        id: r.try_get("", "id")?,
        kind: MediaKind::parse(&kind)
            .ok_or_else(|| internal(anyhow::anyhow!("kind {kind}"), "media row"))?,
        content_type: r.try_get("", "content_type")?,
        byte_size: r.try_get("", "byte_size")?,
        width: r.try_get("", "width")?,
        height: r.try_get("", "height")?,
        alt: r.try_get("", "alt")?,
        has_thumbnail: r.try_get("", "has_thumbnail")?,
        sha256: r.try_get("", "sha256")?,
        created_at: r
            .try_get::<DateTime<FixedOffset>>("", "created_at")?
            .to_utc(),
    })
}

/// The tenant's media, newest first. CATALOG_READ.
pub async fn media_list(
    core: &Core,
    ctx: &RequestCtx,
    page: PageArgs,
) -> ServiceResult<Page<MediaAsset>> {
    require(ctx, Permission::CatalogRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLS} FROM media_assets m
                 WHERE m.tenant_id = $1 AND ($2::uuid IS NULL OR m.id < $2)
                 ORDER BY m.id DESC LIMIT $3"
            ),
            vec![
                ctx.tenant.0.into(),
                page.after.into(),
                i64::try_from(page.first + 1).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    tx.commit().await?;
    let items = rows.iter().map(asset_from).collect::<ServiceResult<_>>()?;
    Ok(Page::from_overfetch(items, page.first))
}

/// Media of many products in gallery order, in one statement (for `Product.media` loaders and
/// `productMedia`). Unknown products, and those of other tenants, simply have none. CATALOG_READ.
pub async fn media_by_products(
    core: &Core,
    ctx: &RequestCtx,
    products: &[Uuid],
) -> ServiceResult<HashMap<Uuid, Vec<MediaAsset>>> {
    require(ctx, Permission::CatalogRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let map = media_by_products_in(&tx, products).await?;
    tx.commit().await?;
    Ok(map)
}

async fn media_by_products_in(
    tx: &TenantTx,
    products: &[Uuid],
) -> ServiceResult<HashMap<Uuid, Vec<MediaAsset>>> {
    let rows = tx
        .query_all_raw(stmt(
            &format!(
                "SELECT pm.product_id, {COLS} FROM product_media pm
                 JOIN media_assets m ON m.tenant_id = pm.tenant_id AND m.id = pm.media_id
                 WHERE pm.tenant_id = $1 AND pm.product_id = ANY($2)
                 ORDER BY pm.product_id, pm.position"
            ),
            vec![tx.tenant().0.into(), products.to_vec().into()],
        ))
        .await?;
    let mut map: HashMap<Uuid, Vec<MediaAsset>> = HashMap::new();
    for r in &rows {
        let product: Uuid = r.try_get("", "product_id")?;
        map.entry(product).or_default().push(asset_from(r)?);
    }
    Ok(map)
}

/// The error for a product id that is unknown, malformed or another tenant's.
pub fn unknown_product() -> ServiceError {
    ServiceError::Invalid(InvalidInput {
        field: "productId",
        message: "no such product".into(),
    })
}

/// The error for a media id that is unknown, malformed or another tenant's.
pub fn unknown_media(index: usize) -> ServiceError {
    ServiceError::Invalid(InvalidInput {
        field: "mediaIds",
        message: format!("mediaIds[{index}]: no such media"),
    })
}

/// Replaces a product's gallery with `media`, in that order (empty clears it). CATALOG_WRITE.
pub async fn product_media_set(
    core: &Core,
    ctx: &RequestCtx,
    product: Uuid,
    media: &[Uuid],
) -> ServiceResult<Vec<MediaAsset>> {
    require(ctx, Permission::CatalogWrite)?;
    if media.len() > MAX_PRODUCT_MEDIA {
        return Err(InvalidInput {
            field: "mediaIds",
            message: format!("at most {MAX_PRODUCT_MEDIA} media per product"),
        }
        .into());
    }
    let mut seen = HashSet::new();
    if let Some(i) = media.iter().position(|m| !seen.insert(*m)) {
        return Err(InvalidInput {
            field: "mediaIds",
            message: format!("mediaIds[{i}] is listed twice"),
        }
        .into());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    // Locking the product serialises concurrent replacements of its gallery.
    let exists = tx
        .query_one_raw(stmt(
            "SELECT 1 AS x FROM products WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![ctx.tenant.0.into(), product.into()],
        ))
        .await?;
    if exists.is_none() {
        return Err(unknown_product());
    }
    let found: HashSet<Uuid> = tx
        .query_all_raw(stmt(
            "SELECT id FROM media_assets WHERE tenant_id = $1 AND id = ANY($2)",
            vec![ctx.tenant.0.into(), media.to_vec().into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<Uuid>("", "id"))
        .collect::<Result<_, _>>()?;
    if let Some(i) = media.iter().position(|m| !found.contains(m)) {
        return Err(unknown_media(i));
    }
    tx.execute_raw(stmt(
        "DELETE FROM product_media WHERE tenant_id = $1 AND product_id = $2",
        vec![ctx.tenant.0.into(), product.into()],
    ))
    .await?;
    tx.execute_raw(stmt(
        "INSERT INTO product_media (tenant_id, product_id, media_id, position)
         SELECT $1, $2, t.media_id, (t.ord - 1)::int FROM unnest($3::uuid[]) WITH ORDINALITY AS t(media_id, ord)",
        vec![ctx.tenant.0.into(), product.into(), media.to_vec().into()],
    ))
    .await?;
    let mut map = media_by_products_in(&tx, &[product]).await?;
    tx.commit().await?;
    Ok(map.remove(&product).unwrap_or_default())
}

// ----------------------------------------------------------------- serving ---

/// A stored file, ready to stream.
pub struct MediaObject {
    pub content_type: String,
    /// The whole file's size.
    pub size: u64,
    /// A strong validator: the content never changes under a key.
    pub etag: String,
    /// What of the file `body` carries (the whole file, one part, or nothing: unsatisfiable).
    pub range: ByteRange,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// The request's `Range` and `If-Range` headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAsk<'a> {
    pub range: Option<&'a str>,
    /// The version the client holds a piece of: another version gets the whole file (the
    /// validator is our strong ETag; a date never matches).
    pub if_range: Option<&'a str>,
}

/// Opens a media file (or its thumbnail) for the public `GET /media/<tenant>/<id>` route. No
/// permission: storefronts read these. The tenant comes from the URL and scopes the lookup like
/// any other, so an id under another tenant's path is NOT_FOUND.
pub async fn media_open(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
    thumbnail: bool,
    ask: RangeAsk<'_>,
) -> ServiceResult<MediaObject> {
    use sea_orm::sqlx::Row;
    // Storefront hot path: one round trip; the ids are typed UUIDs rendered as literals.
    let rows = uphub_tenants::tenant_read(
        &core.db,
        ctx.tenant,
        &format!(
            "SELECT content_type, storage_key, thumbnail_key, thumbnail_content_type, sha256
             FROM media_assets WHERE tenant_id = '{}'::uuid AND id = '{id}'::uuid",
            ctx.tenant.0
        ),
    )
    .await?;
    let row = rows.first().ok_or(ServiceError::NotFound)?;
    let col = |e: sea_orm::sqlx::Error| internal(e, "media row");
    let sha256: String = row.try_get("sha256").map_err(col)?;
    let (key, content_type, etag) = if thumbnail {
        let key: Option<String> = row.try_get("thumbnail_key").map_err(col)?;
        let ct: Option<String> = row.try_get("thumbnail_content_type").map_err(col)?;
        match (key, ct) {
            (Some(k), Some(ct)) => (k, ct, format!("\"{sha256}-t\"")),
            _ => return Err(ServiceError::NotFound),
        }
    } else {
        (
            row.try_get("storage_key").map_err(col)?,
            row.try_get("content_type").map_err(col)?,
            format!("\"{sha256}\""),
        )
    };
    let store = core.media_store.clone();
    let path = ObjectPath::from(key.as_str());
    let missing = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => {
            tracing::warn!(%key, "media row without its object");
            ServiceError::NotFound
        }
        e => internal(e, "opening a media object"),
    };
    // A part needs the size first (a video player asks for `bytes=N-` as it seeks).
    let range = ask
        .range
        .filter(|_| ask.if_range.is_none_or(|t| t.trim() == etag));
    let (size, range) = match range {
        None => (None, ByteRange::Whole),
        Some(h) => {
            let size = store.head(&path).await.map_err(missing)?.size;
            (Some(size), byte_range(Some(h), size))
        }
    };
    let (size, body) = match range {
        ByteRange::Unsatisfiable => (
            size.unwrap_or_default(),
            futures_util::stream::empty().boxed(),
        ),
        ByteRange::Whole => {
            let got = store.get(&path).await.map_err(missing)?;
            (got.meta.size, stream_of(got))
        }
        ByteRange::Part { start, end } => {
            let opts = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(start..end + 1)),
                ..Default::default()
            };
            let got = store.get_opts(&path, opts).await.map_err(missing)?;
            (got.meta.size, stream_of(got))
        }
    };
    Ok(MediaObject {
        content_type,
        size,
        etag,
        range,
        body,
    })
}

fn stream_of(got: object_store::GetResult) -> BoxStream<'static, std::io::Result<Bytes>> {
    got.into_stream()
        .map(|r| r.map_err(std::io::Error::from))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_text_is_trimmed_bounded_and_optional() {
        assert_eq!(parse_alt(None), Ok(None));
        assert_eq!(parse_alt(Some("   ".into())), Ok(None));
        assert_eq!(
            parse_alt(Some(" red shoe ".into())),
            Ok(Some("red shoe".into()))
        );
        assert_eq!(parse_alt(Some("x".repeat(501))).unwrap_err().field, "alt");
        assert_eq!(parse_alt(Some("a\u{0}b".into())).unwrap_err().field, "alt");
    }

    fn png(w: u32, h: u32, alpha: bool) -> Vec<u8> {
        let img = if alpha {
            image::DynamicImage::ImageRgba8(image::RgbaImage::new(w, h))
        } else {
            image::DynamicImage::ImageRgb8(image::RgbImage::new(w, h))
        };
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn thumbnails_are_320_on_the_long_side_jpeg_or_png_by_alpha() {
        let limits = MediaLimits::default();
        let t = thumbnail(&png(640, 200, false), MediaFormat::Png, &limits).unwrap();
        assert_eq!(
            (t.width, t.height, t.content_type),
            (640, 200, "image/jpeg")
        );
        let small = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((small.width(), small.height()), (320, 100));
        let t = thumbnail(&png(100, 400, true), MediaFormat::Png, &limits).unwrap();
        assert_eq!(t.content_type, "image/png");
        let small = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((small.width(), small.height()), (80, 320));
    }

    #[test]
    fn images_over_the_pixel_cap_are_refused_before_decoding() {
        let limits = MediaLimits {
            max_image_pixels: 100,
            ..MediaLimits::default()
        };
        let e = thumbnail(&png(11, 10, false), MediaFormat::Png, &limits)
            .err()
            .unwrap();
        assert_eq!(e.field(), Some("file"));
        // A PNG signature on garbage is undecodable, not an internal error.
        let e = thumbnail(b"\x89PNG\r\n\x1a\nnot really", MediaFormat::Png, &limits)
            .err()
            .unwrap();
        assert_eq!(e.field(), Some("file"));
    }
}
