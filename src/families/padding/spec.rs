//! What the padding ops take and return: which tokens to keep ([`Keep`]), the packed results
//! ([`Unpadded`], [`UnpaddedOnDevice`]) and the data errors the kernels report.
//!
//! Layer: families. Imports core; the API (mod.rs) and the launch code import it.

use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;

/// Which tokens to keep.
#[derive(Clone, Copy, Debug)]
pub enum Keep<'a> {
    /// `[batch, seqlen]`, u8 (bool) or i32; nonzero keeps. Holes are allowed.
    Mask(&'a Tensor),
    /// `[batch]` i32: the first `seqlens[b]` tokens of sequence b (each in [0, seqlen]).
    Seqlens(&'a Tensor),
}

/// The result of [`unpad`].
#[derive(Debug)]
pub struct Unpadded {
    /// `[nnz, …]`: the kept tokens, in mask order.
    pub packed: Tensor,
    /// `[nnz]` i32: their flat indices b·seqlen + s.
    pub indices: Tensor,
    /// `[batch + 1]` i32: prefix sums of the per-sequence counts (cu_seqlens[0] = 0).
    pub cu_seqlens: Tensor,
    /// The largest per-sequence count.
    pub max_seqlen: usize,
}

/// The result of [`unpad_with_capacity`]: everything stays on the device.
#[derive(Debug)]
pub struct UnpaddedOnDevice {
    /// `[capacity, …]`: the first nnz rows are the kept tokens.
    pub packed: Tensor,
    /// `[capacity]` i32: the first nnz are the kept tokens' flat indices.
    pub indices: Tensor,
    /// `[batch + 1]` i32.
    pub cu_seqlens: Tensor,
    /// `[2]` i32: nnz and max_seqlen.
    pub counts: Tensor,
    /// `[1]` i32: a `kiln_data_status` code (0 = OK; 1 = nnz exceeded the capacity).
    pub status: Tensor,
}

impl UnpaddedOnDevice {
    /// Waits for the device and returns (nnz, max_seqlen), or the data error the kernels
    /// reported (a capacity too small names `capacity` and the nnz it needed).
    pub fn finish(&self) -> Result<(usize, usize)> {
        let counts = self.counts.to_f64_vec()?;
        data_status(self.status.to_f64_vec()?[0] as i32, counts[0] as usize, self.indices.len())?;
        Ok((counts[0] as usize, counts[1] as usize))
    }
}

/// Maps a `kiln_data_status` code to a typed error.
pub(crate) fn data_status(code: i32, nnz: usize, capacity: usize) -> Result<()> {
    let (arg, reason) = match code {
        0 => return Ok(()),
        1 => ("capacity", format!("{nnz} tokens are kept, more than the capacity {capacity}")),
        2 => ("seqlens", "a length is outside [0, seqlen]".to_string()),
        3 => ("indices", "an index is outside [0, batch·seqlen)".to_string()),
        4 => ("indices", "two rows have the same index".to_string()),
        other => ("status", format!("unknown data status {other}")),
    };
    Err(Error::InvalidValue { arg, reason })
}
