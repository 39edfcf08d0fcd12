//! Media library rules: what an upload really is (from its magic bytes, never from the client's
//! content type or file name), how large each kind may be, and thumbnail geometry.

use crate::identity::InvalidInput;

/// How many leading bytes [`sniff`] needs to decide.
pub const SNIFF_LEN: usize = 64;

/// The long side of a thumbnail, in pixels.
pub const THUMBNAIL_LONG_SIDE: u32 = 320;

/// What a media asset is, as stored and as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Image,
    Video,
}

impl MediaKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "IMAGE",
            MediaKind::Video => "VIDEO",
        }
    }

    pub fn parse(s: &str) -> Option<MediaKind> {
        match s {
            "IMAGE" => Some(MediaKind::Image),
            "VIDEO" => Some(MediaKind::Video),
            _ => None,
        }
    }
}

/// A container format the library accepts, recognised by its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaFormat {
    Png,
    Jpeg,
    WebP,
    Gif,
    Mp4,
    QuickTime,
    WebM,
}

impl MediaFormat {
    pub const fn kind(self) -> MediaKind {
        match self {
            MediaFormat::Png | MediaFormat::Jpeg | MediaFormat::WebP | MediaFormat::Gif => {
                MediaKind::Image
            }
            MediaFormat::Mp4 | MediaFormat::QuickTime | MediaFormat::WebM => MediaKind::Video,
        }
    }

    /// The content type the file is stored and served with.
    pub const fn content_type(self) -> &'static str {
        match self {
            MediaFormat::Png => "image/png",
            MediaFormat::Jpeg => "image/jpeg",
            MediaFormat::WebP => "image/webp",
            MediaFormat::Gif => "image/gif",
            MediaFormat::Mp4 => "video/mp4",
            MediaFormat::QuickTime => "video/quicktime",
            MediaFormat::WebM => "video/webm",
        }
    }
}

/// ISO base-media brands of playable video. Image brands of the same container (AVIF, HEIC) and
/// audio-only brands (M4A) are deliberately absent: they are not videos a storefront can play.
const VIDEO_BRANDS: &[&[u8; 4]] = &[
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ",
    b"M4VH", b"M4VP", b"mmp4", b"dash", b"msnv", b"f4v ", b"3gp4", b"3gp5", b"3gp6", b"3g2a",
];

/// Recognises the format from the first bytes of a file ([`SNIFF_LEN`] are enough).
pub fn sniff(head: &[u8]) -> Option<MediaFormat> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(MediaFormat::Png);
    }
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(MediaFormat::Jpeg);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some(MediaFormat::Gif);
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some(MediaFormat::WebP);
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let brand = &head[8..12];
        if brand == b"qt  " {
            return Some(MediaFormat::QuickTime);
        }
        if VIDEO_BRANDS.iter().any(|b| &b[..] == brand) {
            return Some(MediaFormat::Mp4);
        }
        return None;
    }
    // Matroska's EBML header; only the WebM profile (DocType "webm") is accepted.
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        let window = &head[..head.len().min(SNIFF_LEN)];
        if window.windows(4).any(|w| w == b"webm") {
            return Some(MediaFormat::WebM);
        }
    }
    None
}

/// Size and decode limits of uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLimits {
    pub max_image_bytes: u64,
    pub max_video_bytes: u64,
    /// Decoded width × height an image may have; refuses decompression bombs before decoding.
    pub max_image_pixels: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_image_bytes: 20 * 1024 * 1024,
            max_video_bytes: 200 * 1024 * 1024,
            max_image_pixels: 40_000_000,
        }
    }
}

impl MediaLimits {
    pub const fn max_bytes(&self, kind: MediaKind) -> u64 {
        match kind {
            MediaKind::Image => self.max_image_bytes,
            MediaKind::Video => self.max_video_bytes,
        }
    }

    /// The largest file of any kind: the transport limit of one upload.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_image_bytes.max(self.max_video_bytes)
    }

    /// Checks a file's size against its kind's limit.
    pub fn check_size(&self, kind: MediaKind, size: u64) -> Result<(), MediaError> {
        if size == 0 {
            return Err(MediaError::Empty);
        }
        let limit = self.max_bytes(kind);
        if size > limit {
            return Err(MediaError::TooLarge { kind, size, limit });
        }
        Ok(())
    }

    /// Checks decoded dimensions (from the header, before decoding the pixels).
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), MediaError> {
        if width == 0 || height == 0 {
            return Err(MediaError::Undecodable);
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_image_pixels {
            return Err(MediaError::TooManyPixels {
                width,
                height,
                limit: self.max_image_pixels,
            });
        }
        Ok(())
    }
}

/// Sniffs and size-checks an upload: the accepted format, or why it is refused.
pub fn classify(head: &[u8], size: u64, limits: &MediaLimits) -> Result<MediaFormat, MediaError> {
    if size == 0 {
        return Err(MediaError::Empty);
    }
    let format = sniff(head).ok_or(MediaError::UnsupportedType)?;
    limits.check_size(format.kind(), size)?;
    Ok(format)
}

/// The size of a thumbnail whose long side is at most `long_side`, keeping the aspect ratio
/// (rounded, never below 1 px). Images already that small keep their size: thumbnails never upscale.
pub fn thumbnail_size(width: u32, height: u32, long_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= long_side || long == 0 {
        return (width.max(1), height.max(1));
    }
    let scale = |v: u32| -> u32 {
        let scaled = (u64::from(v) * u64::from(long_side) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(scaled).unwrap_or(long_side).max(1)
    };
    if width >= height {
        (long_side, scale(height))
    } else {
        (scale(width), long_side)
    }
}

/// Why an upload is refused. Every variant is about the `file` input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("the file is empty")]
    Empty,
    #[error(
        "unsupported file type: images must be PNG, JPEG, WebP or GIF; videos MP4, QuickTime or WebM"
    )]
    UnsupportedType,
    #[error("{} files may be at most {limit} bytes; this one has {size}", kind.as_str().to_ascii_lowercase())]
    TooLarge {
        kind: MediaKind,
        size: u64,
        limit: u64,
    },
    #[error("the image is {width}×{height} pixels; at most {limit} pixels are accepted")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image could not be decoded")]
    Undecodable,
}

impl From<MediaError> for InvalidInput {
    fn from(e: MediaError) -> Self {
        InvalidInput {
            field: "file",
            message: e.to_string(),
        }
    }
}

/// What a `Range` request header asks of a file of `size` bytes (RFC 9110 §14): one byte range
/// is served as a part; several ranges, another unit or a malformed header are ignored (the whole
/// file is served, as the RFC allows); a range that starts past the end cannot be satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Whole,
    /// Bytes `start..=end`, both within the file.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn byte_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.map(str::trim).and_then(|h| h.strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return ByteRange::Whole;
            }
            if start >= size {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Part {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            }
        }
        _ => ByteRange::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(SNIFF_LEN, 0);
        v
    }

    #[test]
    fn images_are_recognised_by_their_signatures() {
        assert_eq!(sniff(&padded(b"\x89PNG\r\n\x1a\n")), Some(MediaFormat::Png));
        assert_eq!(
            sniff(&padded(&[0xFF, 0xD8, 0xFF, 0xE0])),
            Some(MediaFormat::Jpeg)
        );
        assert_eq!(sniff(&padded(b"GIF89a")), Some(MediaFormat::Gif));
        assert_eq!(sniff(&padded(b"GIF87a")), Some(MediaFormat::Gif));
        assert_eq!(
            sniff(&padded(b"RIFF\x10\x00\x00\x00WEBPVP8 ")),
            Some(MediaFormat::WebP)
        );
    }

    #[test]
    fn videos_are_recognised_by_their_signatures() {
        assert_eq!(
            sniff(&padded(b"\x00\x00\x00\x18ftypmp42")),
            Some(MediaFormat::Mp4)
        );
        assert_eq!(
            sniff(&padded(b"\x00\x00\x00\x20ftypisom")),
            Some(MediaFormat::Mp4)
        );
        assert_eq!(
            sniff(&padded(b"\x00\x00\x00\x14ftypqt  ")),
            Some(MediaFormat::QuickTime)
        );
        assert_eq!(
            sniff(&padded(
                b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm"
            )),
            Some(MediaFormat::WebM)
        );
        assert_eq!(MediaFormat::WebM.kind(), MediaKind::Video);
        assert_eq!(MediaFormat::QuickTime.content_type(), "video/quicktime");
    }

    #[test]
    fn look_alikes_and_other_files_are_refused() {
        // Text renamed .png, HTML, a RIFF that is WAV audio, HEIC/AVIF stills, M4A audio, Matroska.
        for head in [
            &b"hello, I am a text file"[..],
            b"<!doctype html><script>",
            b"RIFF\x10\x00\x00\x00WAVEfmt ",
            b"\x00\x00\x00\x18ftypheic",
            b"\x00\x00\x00\x1cftypavif",
            b"\x00\x00\x00\x20ftypM4A ",
            b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska",
            b"\x89PNG",
            b"",
        ] {
            assert_eq!(sniff(head), None, "{head:?}");
        }
    }

    #[test]
    fn each_kind_has_its_own_size_limit() {
        let l = MediaLimits {
            max_image_bytes: 100,
            max_video_bytes: 1000,
            max_image_pixels: 10,
        };
        let png = padded(b"\x89PNG\r\n\x1a\n");
        let mp4 = padded(b"\x00\x00\x00\x18ftypmp42");
        assert_eq!(classify(&png, 100, &l), Ok(MediaFormat::Png));
        assert!(matches!(
            classify(&png, 101, &l),
            Err(MediaError::TooLarge {
                kind: MediaKind::Image,
                limit: 100,
                ..
            })
        ));
        assert_eq!(classify(&mp4, 1000, &l), Ok(MediaFormat::Mp4));
        assert!(matches!(
            classify(&mp4, 1001, &l),
            Err(MediaError::TooLarge { .. })
        ));
        assert_eq!(classify(&png, 0, &l), Err(MediaError::Empty));
        assert_eq!(
            classify(b"plain text", 10, &l),
            Err(MediaError::UnsupportedType)
        );
        assert_eq!(l.max_upload_bytes(), 1000);
    }

    #[test]
    fn decompression_bombs_are_refused_by_dimensions() {
        let l = MediaLimits::default();
        assert_eq!(l.check_dimensions(8000, 5000), Ok(()));
        assert!(matches!(
            l.check_dimensions(50_000, 50_000),
            Err(MediaError::TooManyPixels { .. })
        ));
        assert_eq!(l.check_dimensions(0, 10), Err(MediaError::Undecodable));
    }

    #[test]
    fn thumbnails_fit_the_long_side_and_keep_the_aspect_ratio() {
        assert_eq!(thumbnail_size(1920, 1080, 320), (320, 180));
        assert_eq!(thumbnail_size(1080, 1920, 320), (180, 320));
        assert_eq!(thumbnail_size(1000, 1000, 320), (320, 320));
        assert_eq!(thumbnail_size(10_000, 1, 320), (320, 1));
        assert_eq!(thumbnail_size(641, 3, 320), (320, 1));
        // Never upscaled.
        assert_eq!(thumbnail_size(200, 100, 320), (200, 100));
        assert_eq!(thumbnail_size(320, 10, 320), (320, 10));
    }

    #[test]
    fn media_errors_are_about_the_file_field() {
        let i: InvalidInput = MediaError::UnsupportedType.into();
        assert_eq!(i.field, "file");
        assert!(i.message.contains("PNG"));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [MediaKind::Image, MediaKind::Video] {
            assert_eq!(MediaKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(MediaKind::parse("AUDIO"), None);
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        use ByteRange::*;
        let r = |h: &str| byte_range(Some(h), 1000);
        assert_eq!(byte_range(None, 1000), Whole);
        assert_eq!(r("bytes=0-499"), Part { start: 0, end: 499 });
        assert_eq!(
            r("bytes=500-"),
            Part {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), Part { start: 0, end: 999 });
        assert_eq!(
            r("bytes=900-5000"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=999-999"),
            Part {
                start: 999,
                end: 999
            }
        );
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Ignored: the whole file is served.
        for h in [
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=5-1",
            "bytes=abc",
            "bytes=-",
            "bytes=1-x",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(r(h), Whole, "{h}");
        }
    }
}
