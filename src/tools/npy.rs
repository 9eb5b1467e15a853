//! `.npy` files for `kiln run`: inputs are read as f32, f64, int32 or int64 (C order) and
//! widened to f64 (index inputs narrowed to i32 with a range check, [`read_indices`]);
//! outputs are written as f64 (outputs of ops run in f64: an f32 file would lose the precision
//! an f64 check needs), f32 (other floating data) or i32 (indices, counts).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use npyz::WriterBuilder;

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops::registry::Array;

fn file_error(path: &Path, reason: impl ToString) -> Error {
    Error::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads a C-ordered `.npy` array of f32, f64, i32 or i64.
pub fn read(path: &Path) -> Result<Array> {
    read_with_dtype(path).map(|(array, _)| array)
}

/// [`read`], with the file's element type (`f4`, `f8`, `i4` or `i8`).
fn read_with_dtype(path: &Path) -> Result<(Array, String)> {
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| file_error(path, e))?;
    if npy.order() != npyz::Order::C {
        return Err(file_error(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
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
    if data.len() != shape.iter().product::<usize>() {
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
