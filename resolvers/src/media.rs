//! The media library: uploads through the GraphQL multipart request spec, the tenant's media,
//! and ordered product galleries.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Upload};
use uphub_domain::identity::Permission;
use uphub_services::audit::require;
use uphub_services::media::{self, NewUpload};
use uphub_services::page::encode_cursor;

use crate::caller::{UserError, authed, decode_id, encode_id, field, page_args, user_errors};

/// IMAGE or VIDEO, decided from the file's bytes.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum MediaKind {
    Image,
    Video,
}

impl From<uphub_domain::media::MediaKind> for MediaKind {
    fn from(k: uphub_domain::media::MediaKind) -> Self {
        match k {
            uphub_domain::media::MediaKind::Image => MediaKind::Image,
            uphub_domain::media::MediaKind::Video => MediaKind::Video,
        }
    }
}

pub struct MediaAsset(pub media::MediaAsset);

#[Object]
impl MediaAsset {
    async fn id(&self) -> ID {
        encode_id("MediaAsset", self.0.id)
    }
    async fn kind(&self) -> MediaKind {
        self.0.kind.into()
    }
    /// Sniffed from the file's bytes; the uploader's claim is ignored.
    async fn content_type(&self) -> &str {
        &self.0.content_type
    }
    async fn byte_size(&self) -> i64 {
        self.0.byte_size
    }
    /// Pixels, after EXIF orientation. Images only.
    async fn width(&self) -> Option<i32> {
        self.0.width
    }
    async fn height(&self) -> Option<i32> {
        self.0.height
    }
    async fn alt(&self) -> Option<&str> {
        self.0.alt.as_deref()
    }
    /// Hex SHA-256 of the file.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    /// Where the file is served, relative to this API's origin. Public and immutable.
    async fn url(&self) -> String {
        self.0.url()
    }
    /// A 320 px (long side) JPEG or PNG rendition. Images only.
    async fn thumbnail_url(&self) -> Option<String> {
        self.0.thumbnail_url()
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
}

#[derive(Default)]
pub struct MediaQuery;

#[Object]
impl MediaQuery {
    /// The tenant's media library, newest first. CATALOG_READ.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn media_assets(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, MediaAsset>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, media::media_list(core, rctx, page).await)?;
        let mut conn = Connection::new(false, page.has_next);
        conn.edges.extend(
            page.items
                .into_iter()
                .map(|m| async_graphql::connection::Edge::new(encode_cursor(m.id), MediaAsset(m))),
        );
        Ok(conn)
    }

    /// A product's gallery in order; an unknown or another tenant's product has none. CATALOG_READ.
    async fn product_media(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
    ) -> async_graphql::Result<Vec<MediaAsset>> {
        let (core, rctx) = authed(ctx)?;
        let Ok(product) = decode_id("Product", &product_id) else {
            field(ctx, require(rctx, Permission::CatalogRead))?;
            return Ok(vec![]);
        };
        let mut map = field(ctx, media::media_by_products(core, rctx, &[product]).await)?;
        Ok(map
            .remove(&product)
            .unwrap_or_default()
            .into_iter()
            .map(MediaAsset)
            .collect())
    }
}

#[derive(InputObject)]
pub struct MediaUploadInput {
    /// The file part of a multipart request. PNG, JPEG, WebP or GIF images; MP4, QuickTime or
    /// WebM videos. Its type is read from its bytes, never from its name or declared type.
    pub file: Upload,
    /// Alternative text for the storefront (at most 500 characters).
    pub alt: Option<String>,
}

#[derive(SimpleObject, Default)]
pub struct MediaUploadPayload {
    pub media: Option<MediaAsset>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ProductMediaSetInput {
    pub product_id: ID,
    /// The whole gallery, in display order; replaces the previous one (empty clears it).
    pub media_ids: Vec<ID>,
}

#[derive(SimpleObject, Default)]
pub struct ProductMediaSetPayload {
    /// The product's gallery after the change, in order.
    pub media: Vec<MediaAsset>,
    pub user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct MediaMutation;

#[Object]
impl MediaMutation {
    /// Uploads one image or video (GraphQL multipart request). Wrong type, too large for its
    /// kind, or an image too large to decode → VALIDATION on `file`. CATALOG_WRITE.
    async fn media_upload(
        &self,
        ctx: &Context<'_>,
        input: MediaUploadInput,
    ) -> async_graphql::Result<MediaUploadPayload> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, require(rctx, Permission::CatalogWrite))?;
        let upload = input.file.value(ctx).map_err(|e| {
            crate::caller::gql_error(
                uphub_services::ServiceError::Internal(
                    anyhow::Error::new(e).context("reading the uploaded file"),
                ),
                &crate::caller::request_id(ctx),
            )
        })?;
        let r = media::media_upload(
            core,
            rctx,
            NewUpload {
                file: upload.content,
                alt: input.alt,
            },
        )
        .await;
        let (m, user_errors) = user_errors(ctx, r)?;
        Ok(MediaUploadPayload {
            media: m.map(MediaAsset),
            user_errors,
        })
    }

    /// Replaces a product's gallery with these media, in this order. Unknown ids and other
    /// tenants' ids are the same VALIDATION error. CATALOG_WRITE.
    async fn product_media_set(
        &self,
        ctx: &Context<'_>,
        input: ProductMediaSetInput,
    ) -> async_graphql::Result<ProductMediaSetPayload> {
        let (core, rctx) = authed(ctx)?;
        let decoded = decode_id("Product", &input.product_id)
            .map_err(|_| media::unknown_product())
            .and_then(|p| {
                let ids = input
                    .media_ids
                    .iter()
                    .enumerate()
                    .map(|(i, m)| decode_id("MediaAsset", m).map_err(|_| media::unknown_media(i)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((p, ids))
            });
        let r = match decoded {
            Ok((p, ids)) => media::product_media_set(core, rctx, p, &ids).await,
            Err(e) => require(rctx, Permission::CatalogWrite).and(Err(e)),
        };
        let (m, user_errors) = user_errors(ctx, r)?;
        Ok(ProductMediaSetPayload {
            media: m.unwrap_or_default().into_iter().map(MediaAsset).collect(),
            user_errors,
        })
    }
}
