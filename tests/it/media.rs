use std::io::Cursor;
use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uphub_services::config::Config;
use uuid::Uuid;

use crate::helpers::{Options, TestApp, code, spawn_app_with};

const UPLOAD: &str = "mutation($i: MediaUploadInput!) { mediaUpload(input: $i) {
    media { id kind contentType byteSize width height alt url thumbnailUrl }
    userErrors { field code message } } }";

const SET: &str = "mutation($i: ProductMediaSetInput!) { productMediaSet(input: $i) {
    media { id } userErrors { field code message } } }";

const PRODUCT_MEDIA: &str = "query($p: ID!) { productMedia(productId: $p) { id url } }";

const LIST: &str =
    "{ mediaAssets(first: 10) { edges { node { id contentType } } pageInfo { hasNextPage } } }";

/// Each app gets its own media directory, named after its (unique) database.
fn media_dir(cfg: &mut Config) {
    cfg.media.dir = std::env::temp_dir().join(format!("uphub-media-{}", cfg.namespace));
}

async fn spawn() -> TestApp {
    spawn_app_with(Options {
        tweak: media_dir,
        ..Options::default()
    })
    .await
}

/// Small limits so "too large" is cheap to send: images 64 KiB, videos 128 KiB, and the
/// transport cap (largest kind plus slack for the other parts) 192 KiB.
async fn spawn_with_small_limits() -> TestApp {
    spawn_app_with(Options {
        tweak: |cfg| {
            media_dir(cfg);
            cfg.media.limits.max_image_bytes = 64 * 1024;
            cfg.media.limits.max_video_bytes = 128 * 1024;
        },
        ..Options::default()
    })
    .await
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 30]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

/// An MP4 as far as its signature goes, padded to `len` bytes (videos are stored, not decoded).
fn mp4(len: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    v.resize(len, 0x5a);
    v
}

/// POST /graphql as a GraphQL multipart request: `operations`, `map`, then the file part.
async fn upload_raw(
    app: &TestApp,
    token: Option<&str>,
    file_name: &str,
    declared_type: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let operations =
        json!({"query": UPLOAD, "variables": {"i": {"file": null, "alt": "front view"}}});
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({"0": ["variables.i.file"]}).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(bytes)
                .file_name(file_name.to_string())
                .mime_str(declared_type)
                .unwrap(),
        );
    let mut req = app
        .http
        .post(format!("{}/graphql", app.addr))
        .multipart(form);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})),
    )
}

/// Uploads and returns the `mediaUpload` payload.
async fn upload(app: &TestApp, token: &str, file_name: &str, bytes: Vec<u8>) -> Value {
    let (status, v) = upload_raw(app, Some(token), file_name, "image/png", bytes).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["mediaUpload"].clone()
}

async fn upload_ok(app: &TestApp, token: &str, bytes: Vec<u8>) -> Value {
    let p = upload(app, token, "photo.png", bytes).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    p["media"].clone()
}

async fn get(app: &TestApp, url: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{url}", app.addr))
        .send()
        .await
        .unwrap()
}

async fn tenant_id(app: &TestApp, slug: &str) -> Uuid {
    uphub_services::identity::tenant_by_slug(&app.core, slug)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// A product of the tenant, created directly (the catalog API is tested elsewhere).
async fn seed_product(app: &TestApp, slug: &str) -> String {
    let tenant = tenant_id(app, slug).await;
    let product = Uuid::now_v7();
    app.core
        .db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO products (tenant_id, id, title, kind) VALUES ($1, $2, 'Sneaker', 'PHYSICAL')",
            [tenant.into(), product.into()],
        ))
        .await
        .unwrap();
    uphub_domain::gid::encode("Product", product)
}

/// Rows of `media_assets` over all tenants (the test connection owns the tables).
async fn media_rows(app: &TestApp) -> i64 {
    app.core
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM media_assets",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

/// Files under the app's media directory.
fn stored_files(app: &TestApp) -> usize {
    fn walk(dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let p: PathBuf = e.path();
                if p.is_dir() { walk(&p) } else { 1 }
            })
            .sum()
    }
    walk(&app.core.cfg.media.dir)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_uploaded_png_has_its_dimensions_and_a_thumbnail_that_is_served_and_decodes() {
    let app = spawn().await;
    let bytes = png(640, 480);
    // The declared type and name are ignored: the bytes say PNG.
    let (_, v) = upload_raw(
        &app,
        Some(&app.a.token),
        "whatever.bin",
        "application/octet-stream",
        bytes.clone(),
    )
    .await;
    let p = &v["data"]["mediaUpload"];
    assert_eq!(p["userErrors"], json!([]), "{v}");
    let m = &p["media"];
    assert_eq!(m["kind"], "IMAGE");
    assert_eq!(m["contentType"], "image/png");
    assert_eq!(m["byteSize"], bytes.len());
    assert_eq!(
        (m["width"].clone(), m["height"].clone()),
        (json!(640), json!(480))
    );
    assert_eq!(m["alt"], "front view");
    let tenant = tenant_id(&app, &app.a.slug).await;
    let url = m["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("/media/{tenant}/")), "{url}");

    let file = get(&app, url).await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "image/png");
    assert!(
        file.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(file.headers()["x-content-type-options"], "nosniff");
    let etag = file.headers()["etag"].clone();
    assert_eq!(file.bytes().await.unwrap().as_ref(), &bytes[..]);
    let again = app
        .http
        .get(format!("{}{url}", app.addr))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let thumb = get(&app, m["thumbnailUrl"].as_str().unwrap()).await;
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let small = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert_eq!((small.width(), small.height()), (320, 240));

    // A JPEG named .png is stored as what it is.
    let j = upload_ok(&app, &app.a.token, jpeg(100, 300)).await;
    assert_eq!(j["contentType"], "image/jpeg");
    assert_eq!(
        (j["width"].clone(), j["height"].clone()),
        (json!(100), json!(300))
    );
    let list = app.gql(Some(&app.a.token), LIST, json!({})).await;
    let listed = ids(&json!(
        list["data"]["mediaAssets"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect::<Vec<_>>()
    ));
    assert_eq!(
        listed,
        vec![j["id"].as_str().unwrap(), m["id"].as_str().unwrap()],
        "newest first: {list}"
    );
    assert_eq!((media_rows(&app).await, stored_files(&app)), (2, 4));
}

#[tokio::test]
async fn a_text_file_renamed_png_is_refused_and_nothing_is_written() {
    let app = spawn().await;
    let p = upload(
        &app,
        &app.a.token,
        "evil.png",
        b"hello, I am plain text".to_vec(),
    )
    .await;
    assert_eq!(p["media"], Value::Null);
    assert_eq!(p["userErrors"][0]["code"], "VALIDATION", "{p}");
    assert_eq!(p["userErrors"][0]["field"], "file");
    // A PNG signature on garbage passes the sniff but not the decoder: refused the same way.
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend_from_slice(&[7u8; 200]);
    let p = upload(&app, &app.a.token, "fake.png", fake).await;
    assert_eq!(
        (
            p["userErrors"][0]["code"].clone(),
            p["userErrors"][0]["field"].clone()
        ),
        (json!("VALIDATION"), json!("file")),
        "{p}"
    );
    assert_eq!((media_rows(&app).await, stored_files(&app)), (0, 0));
}

#[tokio::test]
async fn oversized_uploads_are_refused_with_a_code_and_nothing_is_written() {
    let app = spawn_with_small_limits().await;
    // Over the image limit but within the transport limit: VALIDATION on the file.
    let mut big_png = png(8, 8);
    big_png.resize(100 * 1024, 0);
    let p = upload(&app, &app.a.token, "big.png", big_png).await;
    assert_eq!(p["media"], Value::Null);
    assert_eq!(
        (
            p["userErrors"][0]["code"].clone(),
            p["userErrors"][0]["field"].clone()
        ),
        (json!("VALIDATION"), json!("file")),
        "{p}"
    );
    // Over the transport limit: the parser stops reading; 413 PAYLOAD_TOO_LARGE.
    let (status, v) = upload_raw(
        &app,
        Some(&app.a.token),
        "huge.mp4",
        "video/mp4",
        mp4(400 * 1024),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (413, "PAYLOAD_TOO_LARGE".to_string()),
        "{v}"
    );
    assert_eq!((media_rows(&app).await, stored_files(&app)), (0, 0));

    // The same 100 KiB is fine for a video, whose limit is larger; it is streamed and served as is.
    let video = mp4(100 * 1024);
    let m = upload_ok(&app, &app.a.token, video.clone()).await;
    assert_eq!(m["kind"], "VIDEO");
    assert_eq!(m["contentType"], "video/mp4");
    assert_eq!(
        (m["width"].clone(), m["thumbnailUrl"].clone()),
        (Value::Null, Value::Null)
    );
    let file = get(&app, m["url"].as_str().unwrap()).await;
    assert_eq!(file.headers()["content-type"], "video/mp4");
    assert_eq!(file.bytes().await.unwrap().as_ref(), &video[..]);
    let thumb = get(&app, &format!("{}/thumb", m["url"].as_str().unwrap())).await;
    assert_eq!(thumb.status(), 404);
    assert_eq!((media_rows(&app).await, stored_files(&app)), (1, 1));
}

#[tokio::test]
async fn product_media_keeps_the_order_it_was_given_and_is_replaced_as_a_whole() {
    let app = spawn().await;
    let t = &app.a.token;
    let a = upload_ok(&app, t, png(10, 10)).await["id"].clone();
    let b = upload_ok(&app, t, png(20, 10)).await["id"].clone();
    let c = upload_ok(&app, t, png(10, 20)).await["id"].clone();
    let product = seed_product(&app, &app.a.slug).await;

    let r = app
        .gql(
            Some(t),
            SET,
            json!({"i": {"productId": product, "mediaIds": [c, a, b]}}),
        )
        .await;
    let p = &r["data"]["productMediaSet"];
    assert_eq!(p["userErrors"], json!([]), "{r}");
    assert_eq!(
        ids(&p["media"]),
        ids(&json!([{"id": c}, {"id": a}, {"id": b}]))
    );
    let read = app.gql(Some(t), PRODUCT_MEDIA, json!({"p": product})).await;
    assert_eq!(
        ids(&read["data"]["productMedia"]),
        ids(&p["media"]),
        "{read}"
    );

    let r = app
        .gql(
            Some(t),
            SET,
            json!({"i": {"productId": product, "mediaIds": [b, c]}}),
        )
        .await;
    assert_eq!(
        ids(&r["data"]["productMediaSet"]["media"]),
        ids(&json!([{"id": b}, {"id": c}]))
    );
    // Duplicates are refused and change nothing.
    let r = app
        .gql(
            Some(t),
            SET,
            json!({"i": {"productId": product, "mediaIds": [a, a]}}),
        )
        .await;
    assert_eq!(
        r["data"]["productMediaSet"]["userErrors"][0]["field"], "mediaIds",
        "{r}"
    );
    let read = app.gql(Some(t), PRODUCT_MEDIA, json!({"p": product})).await;
    assert_eq!(ids(&read["data"]["productMedia"]).len(), 2);
    // An empty list clears the gallery.
    let r = app
        .gql(
            Some(t),
            SET,
            json!({"i": {"productId": product, "mediaIds": []}}),
        )
        .await;
    assert_eq!(r["data"]["productMediaSet"]["media"], json!([]), "{r}");
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_attach_nor_fetch_media() {
    let app = spawn().await;
    let m = upload_ok(&app, &app.a.token, png(30, 30)).await;
    let media_a = m["id"].clone();
    let product_a = seed_product(&app, &app.a.slug).await;
    let product_b = seed_product(&app, &app.b.slug).await;
    let r = app
        .gql(
            Some(&app.a.token),
            SET,
            json!({"i": {"productId": product_a, "mediaIds": [media_a]}}),
        )
        .await;
    assert_eq!(r["data"]["productMediaSet"]["userErrors"], json!([]), "{r}");

    // Invisible…
    let list = app.gql(Some(&app.b.token), LIST, json!({})).await;
    assert_eq!(list["data"]["mediaAssets"]["edges"], json!([]), "{list}");
    let read = app
        .gql(Some(&app.b.token), PRODUCT_MEDIA, json!({"p": product_a}))
        .await;
    assert_eq!(read["data"]["productMedia"], json!([]), "{read}");

    // …not attachable, with exactly the error of an id that names nothing…
    let unknown = uphub_domain::gid::encode("MediaAsset", Uuid::now_v7());
    let theirs = app
        .gql(
            Some(&app.b.token),
            SET,
            json!({"i": {"productId": product_b, "mediaIds": [media_a]}}),
        )
        .await;
    let missing = app
        .gql(
            Some(&app.b.token),
            SET,
            json!({"i": {"productId": product_b, "mediaIds": [unknown]}}),
        )
        .await;
    assert_eq!(
        theirs["data"]["productMediaSet"]["userErrors"],
        missing["data"]["productMediaSet"]["userErrors"]
    );
    assert_eq!(
        theirs["data"]["productMediaSet"]["userErrors"][0]["code"], "VALIDATION",
        "{theirs}"
    );
    // …and A's product is not B's to change.
    let own = upload_ok(&app, &app.b.token, png(5, 5)).await["id"].clone();
    let r = app
        .gql(
            Some(&app.b.token),
            SET,
            json!({"i": {"productId": product_a, "mediaIds": [own]}}),
        )
        .await;
    assert_eq!(
        r["data"]["productMediaSet"]["userErrors"][0]["field"], "productId",
        "{r}"
    );
    let still = app
        .gql(Some(&app.a.token), PRODUCT_MEDIA, json!({"p": product_a}))
        .await;
    assert_eq!(
        ids(&still["data"]["productMedia"]),
        vec![media_a.as_str().unwrap()]
    );

    // Not fetchable through B's tenant path, an unknown id, or a malformed path.
    let tenant_a = tenant_id(&app, &app.a.slug).await.to_string();
    let tenant_b = tenant_id(&app, &app.b.slug).await.to_string();
    let url = m["url"].as_str().unwrap();
    assert_eq!(get(&app, url).await.status(), 200);
    let via_b = url.replace(&tenant_a, &tenant_b);
    assert_ne!(via_b, url);
    assert_eq!(get(&app, &via_b).await.status(), 404);
    assert_eq!(get(&app, &format!("{via_b}/thumb")).await.status(), 404);
    assert_eq!(
        get(&app, &format!("/media/{tenant_a}/{}", Uuid::now_v7()))
            .await
            .status(),
        404
    );
    assert_eq!(get(&app, "/media/../etc").await.status(), 404);
    assert_eq!(get(&app, "/media/x/y").await.status(), 404);
}

#[tokio::test]
async fn a_read_only_api_key_can_list_media_but_cannot_upload_or_attach() {
    let app = spawn().await;
    let r = app
        .gql(
            Some(&app.a.token),
            "mutation($i: ApiKeyCreateInput!) { apiKeyCreate(input: $i) { secret userErrors { code } } }",
            json!({"i": {"name": "storefront", "scopes": ["CATALOG_READ"]}}),
        )
        .await;
    let key = r["data"]["apiKeyCreate"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = upload_raw(&app, Some(&key), "a.png", "image/png", png(4, 4)).await;
    assert_eq!((status, code(&v)), (200, "FORBIDDEN".to_string()), "{v}");
    assert_eq!((media_rows(&app).await, stored_files(&app)), (0, 0));
    let product = seed_product(&app, &app.a.slug).await;
    let r = app
        .gql(
            Some(&key),
            SET,
            json!({"i": {"productId": product, "mediaIds": []}}),
        )
        .await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    let list = app.gql(Some(&key), LIST, json!({})).await;
    assert_eq!(list["data"]["mediaAssets"]["edges"], json!([]), "{list}");
    // Anonymous uploads are refused before the body is read.
    let (status, v) = upload_raw(&app, None, "a.png", "image/png", png(4, 4)).await;
    assert_eq!(
        (status, code(&v)),
        (401, "UNAUTHENTICATED".to_string()),
        "{v}"
    );
}

#[tokio::test]
async fn a_failed_insert_deletes_the_stored_files_and_a_failed_store_writes_no_row() {
    let app = spawn().await;
    // Inject a database failure after the objects are stored.
    app.core
        .db
        .execute_unprepared(
            "CREATE FUNCTION media_fail() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
             CREATE TRIGGER media_fail BEFORE INSERT ON media_assets
               FOR EACH ROW EXECUTE FUNCTION media_fail();",
        )
        .await
        .unwrap();
    let (status, v) = upload_raw(&app, Some(&app.a.token), "a.png", "image/png", png(40, 40)).await;
    assert_eq!((status, code(&v)), (200, "INTERNAL".to_string()), "{v}");
    assert_eq!((media_rows(&app).await, stored_files(&app)), (0, 0));
    let (_, v) = upload_raw(&app, Some(&app.a.token), "a.mp4", "video/mp4", mp4(4096)).await;
    assert_eq!(code(&v), "INTERNAL", "{v}");
    assert_eq!((media_rows(&app).await, stored_files(&app)), (0, 0));

    // A store that cannot be written (its root became a regular file while the server ran): no
    // row either.
    let broken = spawn().await;
    let root = broken.core.cfg.media.dir.clone();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    let (_, v) = upload_raw(
        &broken,
        Some(&broken.a.token),
        "a.png",
        "image/png",
        png(8, 8),
    )
    .await;
    assert_eq!(code(&v), "INTERNAL", "{v}");
    assert_eq!(media_rows(&broken).await, 0);
}

#[tokio::test]
async fn a_video_is_served_in_byte_ranges_for_seeking_players() {
    let app = spawn().await;
    let mut video = mp4(200 * 1024);
    for (i, b) in video.iter_mut().enumerate().skip(64) {
        *b = (i % 251) as u8;
    }
    let m = upload_ok(&app, &app.a.token, video.clone()).await;
    assert_eq!(m["contentType"], "video/mp4");
    let url = format!("{}{}", app.addr, m["url"].as_str().unwrap());
    let ranged = |range: &str| app.http.get(&url).header("range", range.to_string()).send();
    let size = video.len();

    // The whole file says it takes ranges.
    let whole = app.http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();

    // A seek: from an offset to the end, a closed range, the last bytes.
    let r = ranged("bytes=100000-").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100000-{}/{size}", size - 1).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[100_000..]);
    let r = ranged("bytes=10-19").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[10..20]);
    let r = ranged("bytes=-16").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[size - 16..]);

    // Past the end: 416 with the size; several ranges or nonsense: the whole file.
    let r = ranged(&format!("bytes={size}-")).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    for h in ["bytes=0-1,5-9", "bytes=oops", "pages=1-2"] {
        let r = ranged(h).await.unwrap();
        assert_eq!(r.status(), 200, "{h}");
        assert_eq!(r.bytes().await.unwrap().len(), size, "{h}");
    }

    // If-Range: the same version resumes, another gets the whole file.
    let r = app
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let r = app
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"another-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), size);

    // The other tenant's path does not serve a byte of it.
    let other = tenant_id(&app, &app.b.slug).await;
    let foreign = format!(
        "{}/media/{other}/{}",
        app.addr,
        m["url"].as_str().unwrap().rsplit('/').next().unwrap()
    );
    let r = app
        .http
        .get(&foreign)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// ------------------------------------------------------------------- S3 ---

/// The endpoint of the moto S3 server this test binary started (one per run).
static S3_ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
const S3_BUCKET: &str = "uphub-media-test";

/// Starts moto (tests/s3/setup.sh installs it from PyPI) on a free loopback port and creates the
/// bucket. The child dies with the returned handle.
async fn start_s3() -> tokio::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/s3/setup.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} could not install moto: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = http.put(format!("{endpoint}/{S3_BUCKET}")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = S3_ENDPOINT.set(endpoint);
    child
}

#[tokio::test]
async fn media_go_to_an_s3_compatible_bucket_when_one_is_configured() {
    let _moto = start_s3().await;
    let app = spawn_app_with(Options {
        tweak: |cfg| {
            media_dir(cfg);
            cfg.media.s3 = Some(uphub_services::config::S3Config {
                bucket: S3_BUCKET.into(),
                endpoint: S3_ENDPOINT.get().cloned(),
                region: "us-east-1".into(),
                access_key_id: uphub_services::config::Secret::new("test-key"),
                secret_access_key: uphub_services::config::Secret::new("test-secret"),
            });
        },
        ..Options::default()
    })
    .await;
    let bytes = png(320, 200);
    let m = upload_ok(&app, &app.a.token, bytes.clone()).await;
    let url = m["url"].as_str().unwrap();

    // Served back from the bucket, whole and in ranges; thumbnails too.
    let file = get(&app, url).await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.unwrap().as_ref(), &bytes[..]);
    let part = app
        .http
        .get(format!("{}{url}", app.addr))
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[8..16]);
    let thumb = get(&app, m["thumbnailUrl"].as_str().unwrap()).await;
    assert_eq!(thumb.status(), 200);
    assert!(image::load_from_memory(&thumb.bytes().await.unwrap()).is_ok());

    // The objects are in the bucket (listed by the S3 API itself), and none on the local disk.
    let listing = reqwest::Client::new()
        .get(format!(
            "{}/{S3_BUCKET}?list-type=2",
            S3_ENDPOINT.get().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(listing.matches("<Key>").count(), 2, "{listing}");
    assert_eq!(stored_files(&app), 0);

    // The other tenant's path serves nothing of it.
    let other = tenant_id(&app, &app.b.slug).await;
    let id = url.rsplit('/').next().unwrap();
    assert_eq!(
        get(&app, &format!("/media/{other}/{id}")).await.status(),
        404
    );
}
