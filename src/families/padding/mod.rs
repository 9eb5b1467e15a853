//! Padding removal for variable-length batches (MosaicBERT's encoder, flash-attn
//! `bert_padding` semantics, REFERENCE.md §3): `unpad` packs the kept tokens of
//! `hidden [batch, seqlen, …]` into `[nnz, …]`, `pad` puts them back with zeros elsewhere.
//! The backward of unpad is `pad` of the gradient; the backward of pad is `gather`.
//!
//! ```
//! use kiln::{padding::{self, Keep}, DType, Tensor};
//!
//! // Two sequences of length 3 with hidden size 2; the second keeps one token.
//! let hidden = Tensor::from_f32(&[1., 1., 2., 2., 3., 3., 4., 4., 5., 5., 6., 6.], &[2, 3, 2], DType::F32)?;
//! let mask = Tensor::from_vec(vec![1u8, 1, 0, 0, 1, 0], &[2, 3])?;
//! let u = padding::unpad(&hidden, Keep::Mask(&mask))?;
//! assert_eq!(u.packed.to_f32_vec()?, vec![1., 1., 2., 2., 5., 5.]);
//! assert_eq!(u.indices.to_f32_vec()?, vec![0., 1., 4.]);
//! assert_eq!(u.cu_seqlens.to_f32_vec()?, vec![0., 2., 3.]);
//! assert_eq!(u.max_seqlen, 2);
//! let back = padding::pad(&u.packed, &u.indices, 2, 3)?;
//! assert_eq!(back.to_f32_vec()?, vec![1., 1., 2., 2., 0., 0., 0., 0., 5., 5., 0., 0.]);
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod cpu;
mod spec;
pub use spec::{Keep, Unpadded, UnpaddedOnDevice};

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

/// `hidden [batch, seqlen, …]` (its dtype and device already checked): (batch, seqlen, row
/// elements). Code, not a declaration: the shape is any rank ≥ 2 within int32 indexing.
fn hidden_dims(hidden: &Tensor) -> Result<(usize, usize, usize)> {
    let (arg, s) = ("hidden", hidden.shape());
    if s.len() < 2 {
        return Err(Error::Shape { arg, expected: "[batch, seqlen, …]".into(), got: s.to_vec() });
    }
    let tokens = s[0].checked_mul(s[1]).filter(|&n| n < (1 << 31));
    if tokens.is_none() {
        return Err(Error::Shape { arg, expected: "batch·seqlen < 2^31 (int32 indices)".into(), got: s.to_vec() });
    }
    let dim: usize = s[2..].iter().product();
    if dim == 0 {
        return Err(Error::Shape {
            arg,
            expected: "[batch, seqlen, …] with nonzero trailing dimensions".into(),
            got: s.to_vec(),
        });
    }
    Ok((s[0], s[1], dim))
}

/// Validates unpad's arguments: hidden floating, then the mask or the lengths, whose shapes
/// are stated in hidden's (batch, seqlen). Returns (batch, seqlen, row elements).
fn validate_unpad(hidden: &Tensor, keep: &Keep) -> Result<(usize, usize, usize)> {
    let device = hidden.device();
    check(&device, &[Arg::new("hidden", hidden).float()])?;
    let dims @ (batch, seqlen, _) = hidden_dims(hidden)?;
    let keep = match *keep {
        Keep::Mask(m) => {
            Arg::new("mask", m).dtype_in(&[DType::U8, DType::I32], "u8 (bool) or i32").shape(vec![batch, seqlen])
        }
        Keep::Seqlens(l) => Arg::new("seqlens", l).dtype(DType::I32).shape(vec![batch]),
    };
    check(&device, &[keep])?;
    Ok(dims)
}

/// The number of indices (their dtype and device already checked). Code, not a declaration:
/// any length, rank 1.
fn indices_len(indices: &Tensor) -> Result<usize> {
    if indices.shape().len() != 1 {
        return Err(Error::Shape { arg: "indices", expected: "[nnz]".into(), got: indices.shape().to_vec() });
    }
    Ok(indices.len())
}

fn cpu_keep(keep: &Keep, seqlen: usize) -> Result<Vec<bool>> {
    match *keep {
        Keep::Mask(m) => Ok(cpu::keep_from_mask(&m.host_f64())),
        Keep::Seqlens(l) => cpu::keep_from_seqlens(&l.host_f64(), seqlen).map_err(|b| Error::InvalidValue {
            arg: "seqlens",
            reason: format!("seqlens[{b}] is outside [0, {seqlen}]"),
        }),
    }
}

fn cpu_indices(indices: &Tensor, tokens: usize, distinct: bool) -> Result<Vec<usize>> {
    cpu::check_indices(&indices.host_f64(), tokens, distinct).map_err(|e| {
        let reason = match e {
            cpu::BadIndex::OutOfRange(i) => format!("indices[{i}] is outside [0, {tokens})"),
            cpu::BadIndex::Duplicate(i) => format!("indices[{i}] repeats an earlier index"),
        };
        Error::InvalidValue { arg: "indices", reason }
    })
}

fn i32_tensor(values: impl IntoIterator<Item = usize>) -> Result<Tensor> {
    let v: Vec<i32> = values.into_iter().map(|x| x as i32).collect();
    let n = v.len();
    Tensor::from_vec(v, &[n])
}

/// Packs the kept tokens. On a GPU this reads nnz back to the host once (to size
/// `packed`): the mask is read once (one look-back launch), the rows gathered once;
/// [`unpad_with_capacity`] does not synchronise.
pub fn unpad(hidden: &Tensor, keep: Keep) -> Result<Unpadded> {
    let (batch, seqlen, dim) = validate_unpad(hidden, &keep)?;
    match Gpu::of(&hidden.device())? {
        None => {
            let u = cpu::unpad(&hidden.host_f64(), &cpu_keep(&keep, seqlen)?, batch, seqlen, dim);
            let mut shape = hidden.shape()[1..].to_vec();
            shape[0] = u.indices.len();
            Ok(Unpadded {
                packed: Tensor::from_f64(&u.packed, &shape, hidden.dtype())?,
                indices: i32_tensor(u.indices)?,
                cu_seqlens: i32_tensor(u.cu_seqlens)?,
                max_seqlen: u.max_seqlen,
            })
        }
        Some(gpu) => on_backend!(&gpu, unpad_exact(hidden, &keep, &gpu)),
    }
}

/// Packs the kept tokens into buffers of `capacity` rows without a host synchronisation:
/// nnz and max_seqlen stay on the device ([`UnpaddedOnDevice::finish`] reads them). More
/// kept tokens than `capacity` is a data error reported through `status`, never an overflow.
pub fn unpad_with_capacity(hidden: &Tensor, keep: Keep, capacity: usize) -> Result<UnpaddedOnDevice> {
    let (batch, seqlen, dim) = validate_unpad(hidden, &keep)?;
    match Gpu::of(&hidden.device())? {
        None => {
            let u = cpu::unpad(&hidden.host_f64(), &cpu_keep(&keep, seqlen)?, batch, seqlen, dim);
            let nnz = u.indices.len();
            let fits = nnz <= capacity;
            let mut packed = vec![0.0; capacity * dim];
            let mut indices = vec![0; capacity];
            if fits {
                packed[..nnz * dim].copy_from_slice(&u.packed);
                indices[..nnz].copy_from_slice(&u.indices);
            }
            let mut shape = hidden.shape()[1..].to_vec();
            shape[0] = capacity;
            Ok(UnpaddedOnDevice {
                packed: Tensor::from_f64(&packed, &shape, hidden.dtype())?,
                indices: i32_tensor(indices)?,
                cu_seqlens: i32_tensor(u.cu_seqlens)?,
                counts: i32_tensor([nnz, u.max_seqlen])?,
                status: i32_tensor([if fits { 0 } else { 1 }])?,
            })
        }
        Some(gpu) => unpad_on(&gpu, hidden, &keep, capacity),
    }
}

/// The kernels' unpad into buffers of `capacity` rows, on the backend of `gpu`.
fn unpad_on(gpu: &Gpu, hidden: &Tensor, keep: &Keep, capacity: usize) -> Result<UnpaddedOnDevice> {
    on_backend!(gpu, unpad(hidden, keep, capacity, gpu))
}

/// `[batch, seqlen, …]` zeros except row `indices[i]` = `packed[i]` (indices distinct and in
/// range; checked, which on a GPU waits for the device). Also the backward of [`unpad`].
pub fn pad(packed: &Tensor, indices: &Tensor, batch: usize, seqlen: usize) -> Result<Tensor> {
    let device = packed.device();
    check(&device, &[Arg::new("packed", packed).float(), Arg::new("indices", indices).dtype(DType::I32)])?;
    if packed.shape().is_empty() || packed.shape()[1..].contains(&0) {
        return Err(Error::Shape {
            arg: "packed",
            expected: "[nnz, …] with nonzero trailing dimensions".into(),
            got: packed.shape().to_vec(),
        });
    }
    let nnz = indices_len(indices)?;
    if packed.shape()[0] != nnz {
        return Err(Error::Shape {
            arg: "packed",
            expected: format!("[{nnz}, …] (one row per index)"),
            got: packed.shape().to_vec(),
        });
    }
    let shape: Vec<usize> = [batch, seqlen].into_iter().chain(packed.shape()[1..].iter().copied()).collect();
    let tokens = batch.checked_mul(seqlen).filter(|&t| t < (1 << 31));
    let Some(tokens) = tokens else {
        return Err(Error::Shape { arg: "batch", expected: "batch·seqlen < 2^31".into(), got: vec![batch, seqlen] });
    };
    let dim: usize = packed.shape()[1..].iter().product();
    match Gpu::of(&device)? {
        None => {
            let idx = cpu_indices(indices, tokens, true)?;
            Tensor::from_f64(&cpu::pad(&packed.host_f64(), &idx, tokens, dim), &shape, packed.dtype())
        }
        Some(gpu) => on_backend!(&gpu, pad(packed, indices, &shape, &gpu)),
    }
}

/// `[nnz, …]` with row i = `hidden[indices[i]]` (indices in range; checked, which on a GPU
/// waits for the device). The backward of [`pad`].
pub fn gather(hidden: &Tensor, indices: &Tensor) -> Result<Tensor> {
    let device = hidden.device();
    check(&device, &[Arg::new("hidden", hidden).float(), Arg::new("indices", indices).dtype(DType::I32)])?;
    let (batch, seqlen, dim) = hidden_dims(hidden)?;
    let nnz = indices_len(indices)?;
    let mut shape = hidden.shape()[1..].to_vec();
    shape[0] = nnz;
    match Gpu::of(&device)? {
        None => {
            let idx = cpu_indices(indices, batch * seqlen, false)?;
            Tensor::from_f64(&cpu::gather(&hidden.host_f64(), &idx, dim), &shape, hidden.dtype())
        }
        Some(gpu) => on_backend!(&gpu, gather(hidden, indices, &shape, &gpu)),
    }
}
