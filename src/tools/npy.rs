//! `.npy` files for `kiln run`: inputs are read as f32, f64, int32 or int64 (C order) and
//! widened to f64 (index inputs narrowed to i32 with a range check, [`read_indices`]);
//! outputs are written as f64 (outputs of ops run in f64: an f32 file would lose the precision
//! an f64 check needs), f32 (other floating data) or i32 (indices, counts).

use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Read};
use std::path::Path;

use npyz::WriterBuilder;

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops::registry::Array;

/// The longest reason a file error carries: a parser's message may quote a whole header.
const MAX_REASON_CHARS: usize = 400;

fn file_error(path: &Path, reason: impl ToString) -> Error {
    let mut reason = reason.to_string();
    if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
        reason.truncate(cut);
        reason.push_str(" …");
    }
    Error::File { path: path.display().to_string(), reason }
}

/// numpy's own limit on the header it reads (`numpy.lib.format._MAX_HEADER_SIZE`): a longer
/// header is refused before it is read, so a damaged length field cannot ask for gigabytes and
/// the header parser never meets more than this much nesting.
const MAX_HEADER_BYTES: usize = 10_000;

/// Reads the preamble (magic, version, header length) and the header of a `.npy` file and checks
/// what the npyz crate would otherwise trip over: a header longer than numpy allows, and a shape
/// whose element count overflows (npyz multiplies the dimensions unchecked: a panic in debug
/// builds, a wrapped count in release ones). Returns the bytes read, for npyz to parse again.
fn checked_preamble(reader: &mut impl Read, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; 8];
    reader.read_exact(&mut bytes).map_err(|_| file_error(path, "not a .npy file (shorter than its magic string)"))?;
    if &bytes[..6] != b"\x93NUMPY" {
        return Err(file_error(path, "not a .npy file (no \\x93NUMPY magic string)"));
    }
    let len_bytes = match bytes[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(file_error(path, format!("unsupported .npy format version {v}"))),
    };
    let mut len = [0u8; 4];
    reader.read_exact(&mut len[..len_bytes]).map_err(|_| file_error(path, "the header length is cut short"))?;
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(file_error(
            path,
            format!("the header claims {header_len} bytes, more than numpy reads ({MAX_HEADER_BYTES})"),
        ));
    }
    bytes.extend(&len[..len_bytes]);
    let start = bytes.len();
    bytes.resize(start + header_len, 0);
    reader.read_exact(&mut bytes[start..]).map_err(|_| file_error(path, "the header is cut short"))?;
    check_shape_keys(&String::from_utf8_lossy(&bytes[start..])).map_err(|reason| file_error(path, reason))?;
    Ok(bytes)
}

/// Checks every `'shape': (...)` of a header's dict: a tuple or list of decimal integers (what
/// numpy writes) whose nonzero dimensions multiply without overflowing 64 bits. A bound on the
/// product of the nonzero dimensions bounds every partial product, in any order.
fn check_shape_keys(header: &str) -> std::result::Result<(), String> {
    for quote in ["'shape'", "\"shape\""] {
        for (at, _) in header.match_indices(quote) {
            let rest = header[at + quote.len()..].trim_start();
            let Some(value) = rest.strip_prefix(':') else { continue }; // a string, not the key
            let value = value.trim_start();
            let close = match value.chars().next() {
                Some('(') => ')',
                Some('[') => ']',
                _ => return Err("the shape is not a tuple of integers".into()),
            };
            let end = value.find(close).ok_or("the shape's tuple is not closed")?;
            let mut count: u64 = 1;
            for dim in value[1..end].split(',').map(str::trim).filter(|d| !d.is_empty()) {
                if !dim.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("the shape holds `{dim}`, not a non-negative decimal integer"));
                }
                let dim: u64 = dim.parse().map_err(|_| format!("the shape's dimension {dim} exceeds 64 bits"))?;
                if dim != 0 {
                    count = count.checked_mul(dim).ok_or_else(|| {
                        format!("the shape {} has more elements than 64 bits can count", &value[..=end])
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Reads a C-ordered `.npy` array of f32, f64, i32 or i64.
pub fn read(path: &Path) -> Result<Array> {
    read_with_dtype(path).map(|(array, _)| array)
}

/// [`read`], with the file's element type (`f4`, `f8`, `i4` or `i8`).
fn read_with_dtype(path: &Path) -> Result<(Array, String)> {
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let mut reader = BufReader::new(file);
    let preamble = checked_preamble(&mut reader, path)?;
    let npy = npyz::NpyFile::new(Cursor::new(preamble).chain(reader)).map_err(|e| file_error(path, e))?;
    if npy.order() != npyz::Order::C {
        return Err(file_error(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape: Vec<usize> =
        npy.shape().iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| {
            file_error(path, format!("the shape {:?} does not fit this machine's addresses", npy.shape()))
        })?;
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let Some(count) = count else {
        return Err(file_error(path, format!("the shape {shape:?} has more elements than memory can address")));
    };
    let type_str = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => return Err(file_error(path, format!("unsupported dtype {other:?}"))),
    };
    let data: Vec<f64> = match &type_str[1..] {
        "f4" => npy.into_vec::<f32>().map(|v| v.into_iter().map(f64::from).collect()),
        "f8" => npy.into_vec::<f64>(),
        "i4" => npy.into_vec::<i32>().map(|v| v.into_iter().map(f64::from).collect()),
        "i8" => npy.into_vec::<i64>().map(|v| v.into_iter().map(|x| x as f64).collect()),
        _ => return Err(file_error(path, format!("unsupported dtype {type_str}: expected f4, f8, i4 or i8"))),
    }
    .map_err(|e| file_error(path, e))?;
    if data.len() != count {
        return Err(file_error(path, "the data does not match the header's shape"));
    }
    Ok((Array::new(shape, data), type_str[1..].to_string()))
}

/// Reads the index input `arg` (edge indices, lengths, masks: i32 on the device) from an
/// array [`read`] accepts. int64 files, numpy's default integer, are narrowed to i32: a value
/// that is negative or past `i32::MAX` is `Error::InvalidValue` naming `arg`, never wrapped.
pub fn read_indices(path: &Path, arg: &'static str) -> Result<Array> {
    let (array, dtype) = read_with_dtype(path)?;
    if dtype == "i8" {
        if let Some((i, v)) = array.data.iter().enumerate().find(|(_, v)| !(0.0..=i32::MAX as f64).contains(*v)) {
            return Err(Error::InvalidValue {
                arg,
                reason: format!("{}: element {i} is {v}, outside the i32 index range 0..={}", path.display(), i32::MAX),
            });
        }
    }
    Ok(array)
}

/// Writes `array` as a C-ordered f32 `.npy` file.
pub fn write_f32(path: &Path, array: &Array) -> Result<()> {
    write(path, &array.shape, array.data.iter().map(|&v| v as f32))
}

/// Writes `array` as a C-ordered f64 `.npy` file (bit for bit).
pub fn write_f64(path: &Path, array: &Array) -> Result<()> {
    write(path, &array.shape, array.data.iter().copied())
}

/// Writes `array`, an output stored in `dtype`, in the file type that keeps its values: f64
/// for f64, f32 for the other floating dtypes, i32 for integers.
pub fn write_output(path: &Path, array: &Array, dtype: DType) -> Result<()> {
    match dtype {
        DType::F64 => write_f64(path, array),
        DType::F32 | DType::F16 | DType::BF16 => write_f32(path, array),
        DType::I32 | DType::U8 => write_i32(path, array),
    }
}

/// Writes `array` as a C-ordered i32 `.npy` file (values must be integers in range).
pub fn write_i32(path: &Path, array: &Array) -> Result<()> {
    write(path, &array.shape, array.data.iter().map(|&v| v as i32))
}

fn write<T: npyz::AutoSerialize>(path: &Path, shape: &[usize], values: impl Iterator<Item = T>) -> Result<()> {
    let file = File::create(path).map_err(|e| file_error(path, e))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(|e| file_error(path, e))?;
    writer.extend(values).map_err(|e| file_error(path, e))?;
    writer.finish().map_err(|e| file_error(path, e))
}
