//! Screenshots of a desktop record, and comparing two of them.
//!
//! Capture: the root window of each screen is read with `GetImage`
//! (ZPixmap, all planes), which includes the windows shown on it, in
//! horizontal strips of at most 1 MiB (and never more than the server's
//! maximum request length), so that any screen size works and memory stays
//! bounded per request. Pixels are converted to 8-bit RGB with the root
//! visual's channel masks, a channel of fewer or more than 8 bits scaled to
//! 0..=255, and encoded as an RGB PNG. Only TrueColor visuals stored at 24
//! or 32 bits per pixel can be captured (every current X server's default);
//! anything else is refused with [`X11Error::UnsupportedVisual`], naming
//! the depth.
//!
//! Comparison: [`compare`] decodes two PNGs (any PNG colour type; 16-bit
//! samples are cut to 8, palettes expanded; pixels compared as RGBA, alpha
//! 255 where the image has none) and counts the pixels that differ outside
//! the excluded rectangles. Images of different sizes are an error
//! ([`X11Error::SizeMismatch`]): their pixels do not correspond. PNGs are
//! untrusted input: one larger than [`MAX_SIDE`] pixels a side or
//! [`MAX_PIXELS`] pixels in all is refused before its pixels are decoded.

use super::{Server, X11Error};
use std::fmt;
use std::io::Cursor;
use tracing::debug;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder, Screen, VisualClass};

/// The largest `GetImage` reply asked for at once.
const STRIP_BYTES: usize = 1 << 20;

/// The widest or tallest PNG [`compare`] decodes.
pub const MAX_SIDE: u32 = 16384;
/// The most pixels a PNG [`compare`] decodes may have (8192x8192, or
/// 16384x4096: 256 MiB once decoded).
pub const MAX_PIXELS: u64 = 1 << 26;

/// One screen's picture, as PNG bytes (8-bit RGB).
#[derive(Clone, PartialEq, Eq)]
pub struct Screenshot {
    pub screen: u32,
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

impl fmt::Debug for Screenshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Screenshot")
            .field("screen", &self.screen)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("png_bytes", &self.png.len())
            .finish()
    }
}

/// A rectangle of pixels, e.g. a clock's window, left out of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    fn contains(&self, x: u32, y: u32) -> bool {
        let (x, y) = (i64::from(x), i64::from(y));
        let (left, top) = (i64::from(self.x), i64::from(self.y));
        x >= left
            && x < left + i64::from(self.width)
            && y >= top
            && y < top + i64::from(self.height)
    }
}

/// What [`compare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub width: u32,
    pub height: u32,
    /// Pixels outside the excluded rectangles that differ.
    pub differing: u64,
    /// The first of them, row by row from the top left: (x, y).
    pub first_difference: Option<(u32, u32)>,
}

/// How a pixel of the root visual becomes RGB.
#[derive(Debug, Clone, Copy)]
struct PixelLayout {
    bytes_per_pixel: usize,
    stride: usize,
    msb_first: bool,
    channels: [Channel; 3],
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    mask: u32,
    shift: u32,
    /// The channel's largest value (mask >> shift).
    max: u32,
}

impl Channel {
    fn new(mask: u32) -> Self {
        let shift = if mask == 0 { 0 } else { mask.trailing_zeros() };
        Self {
            mask,
            shift,
            max: mask >> shift,
        }
    }

    fn get(&self, pixel: u32) -> u8 {
        let v = (pixel & self.mask) >> self.shift;
        match self.max {
            0 => 0,
            255 => v as u8,
            max => ((u64::from(v) * 255 + u64::from(max) / 2) / u64::from(max)) as u8,
        }
    }
}

impl PixelLayout {
    /// The layout of `screen`'s root visual, or why it cannot be captured.
    fn of(server: &Server<'_>, index: u32, screen: &Screen) -> Result<Self, X11Error> {
        let setup = server.conn.setup();
        let no_visual = || X11Error::NoVisual {
            display: server.display.to_string(),
            screen: index,
            visual: screen.root_visual,
        };
        let (depth, visual) = screen
            .allowed_depths
            .iter()
            .find_map(|d| {
                d.visuals
                    .iter()
                    .find(|v| v.visual_id == screen.root_visual)
                    .map(|v| (d.depth, v))
            })
            .ok_or_else(no_visual)?;
        let format = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .ok_or_else(no_visual)?;
        if visual.class != VisualClass::TRUE_COLOR || !matches!(format.bits_per_pixel, 24 | 32) {
            return Err(X11Error::UnsupportedVisual {
                display: server.display.to_string(),
                screen: index,
                depth,
                bits_per_pixel: format.bits_per_pixel,
                class: format!("{:?}", visual.class),
            });
        }
        let width = usize::from(screen.width_in_pixels);
        let pad = usize::from(format.scanline_pad.max(8));
        let bits = width * usize::from(format.bits_per_pixel);
        Ok(Self {
            bytes_per_pixel: usize::from(format.bits_per_pixel) / 8,
            stride: bits.div_ceil(pad) * pad / 8,
            msb_first: setup.image_byte_order == ImageOrder::MSB_FIRST,
            channels: [
                Channel::new(visual.red_mask),
                Channel::new(visual.green_mask),
                Channel::new(visual.blue_mask),
            ],
        })
    }

    /// Append the RGB pixels of `rows` (ZPixmap data) to `out`.
    fn convert(&self, data: &[u8], width: usize, rows: usize, out: &mut Vec<u8>) {
        // One loop per pixel size and byte order, so each is a plain load.
        match (self.bytes_per_pixel, self.msb_first) {
            (4, false) => self.convert_with::<4>(data, width, rows, out, |p| {
                u32::from_le_bytes([p[0], p[1], p[2], p[3]])
            }),
            (4, true) => self.convert_with::<4>(data, width, rows, out, |p| {
                u32::from_be_bytes([p[0], p[1], p[2], p[3]])
            }),
            (_, false) => self.convert_with::<3>(data, width, rows, out, |p| {
                u32::from_le_bytes([p[0], p[1], p[2], 0])
            }),
            (_, true) => self.convert_with::<3>(data, width, rows, out, |p| {
                u32::from_be_bytes([0, p[0], p[1], p[2]])
            }),
        }
    }

    fn convert_with<const N: usize>(
        &self,
        data: &[u8],
        width: usize,
        rows: usize,
        out: &mut Vec<u8>,
        load: impl Fn(&[u8]) -> u32,
    ) {
        let [r, g, b] = self.channels;
        for row in data.chunks_exact(self.stride).take(rows) {
            for p in row[..width * N].chunks_exact(N) {
                let pixel = load(p);
                out.extend_from_slice(&[r.get(pixel), g.get(pixel), b.get(pixel)]);
            }
        }
    }
}

/// A screen's pixels as 8-bit RGB, before PNG encoding (done once the
/// server is ungrabbed: it takes longer than reading the pixels).
#[derive(Debug)]
pub(super) struct Pixels {
    screen: u32,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Pixels {
    pub(super) fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub(super) fn encode(self, display: &str) -> Result<Screenshot, X11Error> {
        let png =
            encode(self.width, self.height, &self.rgb).map_err(|source| X11Error::PngEncode {
                display: display.to_string(),
                screen: self.screen,
                source,
            })?;
        debug!(
            screen = self.screen,
            width = self.width,
            height = self.height,
            png_bytes = png.len(),
            "encoded a screenshot"
        );
        Ok(Screenshot {
            screen: self.screen,
            width: self.width,
            height: self.height,
            png,
        })
    }
}

/// The pixels of screen `index` (call with the server grabbed).
pub(super) fn capture(
    server: &Server<'_>,
    index: u32,
    screen: &Screen,
) -> Result<Pixels, X11Error> {
    let layout = PixelLayout::of(server, index, screen)?;
    let (width, height) = (screen.width_in_pixels, screen.height_in_pixels);
    // Leave room for the reply header in the server's request limit.
    let budget = STRIP_BYTES.min(server.maximum_request_bytes().saturating_sub(64));
    let strip_rows = (budget / layout.stride.max(1)).clamp(1, usize::from(height.max(1))) as u16;
    let mut rgb = Vec::with_capacity(usize::from(width) * usize::from(height) * 3);
    let mut y = 0u16;
    while y < height {
        let rows = strip_rows.min(height - y);
        let cookie = server.conn.get_image(
            ImageFormat::Z_PIXMAP,
            screen.root,
            0,
            y as i16,
            width,
            rows,
            !0,
        );
        let reply = server.reply("GetImage", screen.root, cookie)?;
        let expected = layout.stride * usize::from(rows);
        if reply.data.len() < expected {
            return Err(X11Error::ShortImage {
                display: server.display.to_string(),
                screen: index,
                first_row: y.into(),
                end_row: (y + rows).into(),
                got: reply.data.len(),
                expected,
            });
        }
        layout.convert(&reply.data, usize::from(width), usize::from(rows), &mut rgb);
        y += rows;
    }
    debug!(
        screen = index,
        width, height, strip_rows, "captured a screen"
    );
    Ok(Pixels {
        screen: index,
        width: width.into(),
        height: height.into(),
        rgb,
    })
}

fn encode(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Fast: screens are mostly flat colour, which compresses well anyway,
    // and this runs while the session waits to be frozen.
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// A decoded PNG: its size and one RGBA pixel (4 bytes) after another.
struct Decoded {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

fn decode(which: &'static str, bytes: &[u8]) -> Result<Decoded, X11Error> {
    let err = |source| X11Error::PngDecode { which, source };
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let (width, height) = {
        let info = decoder.read_header_info().map_err(err)?;
        (info.width, info.height)
    };
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(X11Error::PngTooLarge {
            which,
            width,
            height,
            max_side: MAX_SIDE,
            max_pixels: MAX_PIXELS,
        });
    }
    let mut reader = decoder.read_info().map_err(err)?;
    // Within MAX_PIXELS, so at most 4 bytes a pixel: bounded.
    let size = reader.output_buffer_size().ok_or(X11Error::PngTooLarge {
        which,
        width,
        height,
        max_side: MAX_SIDE,
        max_pixels: MAX_PIXELS,
    })?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(err)?;
    buf.truncate(frame.buffer_size());
    let rgba = match frame.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        // Grayscale; Indexed is expanded to RGB(A) by the transformation.
        _ => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
    };
    Ok(Decoded {
        width,
        height,
        rgba,
    })
}

/// Count the pixels that differ between two PNG screenshots outside the
/// `exclude` rectangles (see the module doc).
pub fn compare(
    before_png: &[u8],
    after_png: &[u8],
    exclude: &[Rect],
) -> Result<Comparison, X11Error> {
    let before = decode("before", before_png)?;
    let after = decode("after", after_png)?;
    if (before.width, before.height) != (after.width, after.height) {
        return Err(X11Error::SizeMismatch {
            before_width: before.width,
            before_height: before.height,
            after_width: after.width,
            after_height: after.height,
        });
    }
    let width = before.width as usize;
    let mut result = Comparison {
        width: before.width,
        height: before.height,
        differing: 0,
        first_difference: None,
    };
    if width == 0 {
        return Ok(result);
    }
    let rows = before
        .rgba
        .chunks_exact(width * 4)
        .zip(after.rgba.chunks_exact(width * 4));
    for (y, (b, a)) in rows.enumerate() {
        if b == a {
            continue;
        }
        let pixels = b.chunks_exact(4).zip(a.chunks_exact(4));
        for (x, (pb, pa)) in pixels.enumerate() {
            let (x, y) = (x as u32, y as u32);
            if pb != pa && !exclude.iter().any(|r| r.contains(x, y)) {
                result.differing += 1;
                result.first_difference.get_or_insert((x, y));
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let rgb: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .flat_map(|(x, y)| f(x, y))
            .collect();
        encode(width, height, &rgb).unwrap()
    }

    #[test]
    fn counts_differences_outside_excluded_rectangles() {
        let a = png_of(40, 30, |_, _| [1, 2, 3]);
        let b = png_of(40, 30, |x, y| {
            if (10..20).contains(&x) && (5..8).contains(&y) {
                [9, 9, 9]
            } else {
                [1, 2, 3]
            }
        });
        let same = compare(&a, &a, &[]).unwrap();
        assert_eq!((same.width, same.height, same.differing), (40, 30, 0));
        assert_eq!(same.first_difference, None);

        let c = compare(&a, &b, &[]).unwrap();
        assert_eq!(c.differing, 30);
        assert_eq!(c.first_difference, Some((10, 5)));

        let hide_top = Rect {
            x: 0,
            y: 0,
            width: 40,
            height: 6,
        };
        let c = compare(&a, &b, &[hide_top]).unwrap();
        assert_eq!(c.differing, 20);
        assert_eq!(c.first_difference, Some((10, 6)));

        let hide_all = Rect {
            x: -5,
            y: -5,
            width: 100,
            height: 100,
        };
        assert_eq!(compare(&a, &b, &[hide_all]).unwrap().differing, 0);
    }

    #[test]
    fn refuses_corrupt_truncated_and_mismatched() {
        let a = png_of(40, 30, |x, y| [x as u8, y as u8, 7]);
        let truncated = &a[..a.len() / 2];
        let e = compare(&a, truncated, &[]).unwrap_err();
        assert!(
            matches!(e, X11Error::PngDecode { which: "after", .. }),
            "{e:?}"
        );

        let mut corrupt = a.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xff;
        let e = compare(&corrupt, &a, &[]).unwrap_err();
        assert!(
            matches!(
                e,
                X11Error::PngDecode {
                    which: "before",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "decoding the before PNG");

        let e = compare(b"not a png at all", &a, &[]).unwrap_err();
        assert!(matches!(e, X11Error::PngDecode { .. }), "{e:?}");

        let small = png_of(20, 30, |_, _| [0, 0, 0]);
        let e = compare(&a, &small, &[]).unwrap_err();
        assert!(matches!(e, X11Error::SizeMismatch { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the screenshots differ in size: 40x30 before, 20x30 after"
        );
    }

    #[test]
    fn refuses_huge_images_before_decoding_them() {
        // A valid header claiming 20000x20000 pixels, with no pixel data.
        let mut huge = Vec::new();
        let mut encoder = png::Encoder::new(&mut huge, 20000, 20000);
        encoder.set_color(png::ColorType::Rgb);
        drop(encoder.write_header().unwrap());
        let small = png_of(2, 2, |_, _| [0, 0, 0]);
        let e = compare(&small, &huge, &[]).unwrap_err();
        assert!(
            matches!(
                e,
                X11Error::PngTooLarge {
                    which: "after",
                    width: 20000,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn converts_padded_rows_in_either_byte_order() {
        let layout = |bytes_per_pixel, stride, msb_first| PixelLayout {
            bytes_per_pixel,
            stride,
            msb_first,
            channels: [
                Channel::new(0xff0000),
                Channel::new(0x00ff00),
                Channel::new(0x0000ff),
            ],
        };
        // Two rows of two 24-bit pixels, each row padded to 8 bytes.
        let msb = [
            0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        let mut out = Vec::new();
        layout(3, 8, true).convert(&msb, 2, 2, &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 1, 2, 3, 4, 5, 6]);
        // One row of two 32-bit pixels, least significant byte first.
        let lsb = [0x56, 0x34, 0x12, 0xff, 0xef, 0xcd, 0xab, 0x00];
        out.clear();
        layout(4, 8, false).convert(&lsb, 2, 1, &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn channels_scale_to_eight_bits() {
        let r = Channel::new(0x3ff << 20);
        assert_eq!(r.get(0x3ff << 20), 255);
        assert_eq!(r.get(0), 0);
        let g = Channel::new(0x00ff00);
        assert_eq!(g.get(0x12ab34), 0xab);
        let five = Channel::new(0x1f);
        assert_eq!(five.get(0x1f), 255);
        assert_eq!(five.get(0x10), 132);
    }
}
