//! CPU references of padding removal (flash-attn bert_padding semantics, REFERENCE.md §3).
//! Plain loops over f64 values; a token (b, s) has the flat index b·seqlen + s.

/// Which tokens a mask keeps (nonzero keeps; holes allowed).
pub fn keep_from_mask(mask: &[f64]) -> Vec<bool> {
    mask.iter().map(|&m| m != 0.0).collect()
}

/// The tokens kept by per-sequence lengths (the first `seqlens[b]` of each sequence), or the
/// index of the first length outside [0, seqlen].
pub fn keep_from_seqlens(seqlens: &[f64], seqlen: usize) -> Result<Vec<bool>, usize> {
    let mut keep = Vec::with_capacity(seqlens.len() * seqlen);
    for (b, &len) in seqlens.iter().enumerate() {
        if !(0.0..=seqlen as f64).contains(&len) {
            return Err(b);
        }
        keep.extend((0..seqlen).map(|s| (s as f64) < len));
    }
    Ok(keep)
}

/// What unpad computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Unpadded {
    /// [nnz, dim]: the kept tokens' rows, in mask order.
    pub packed: Vec<f64>,
    /// [nnz]: their flat indices b·seqlen + s.
    pub indices: Vec<usize>,
    /// [batch + 1]: prefix sums of the per-sequence counts.
    pub cu_seqlens: Vec<usize>,
    /// The largest per-sequence count.
    pub max_seqlen: usize,
}

/// Packs the kept rows of `hidden` [batch, seqlen, dim] (`keep` is [batch, seqlen]).
pub fn unpad(hidden: &[f64], keep: &[bool], batch: usize, seqlen: usize, dim: usize) -> Unpadded {
    let mut out = Unpadded { packed: Vec::new(), indices: Vec::new(), cu_seqlens: vec![0], max_seqlen: 0 };
    for b in 0..batch {
        let mut count = 0;
        for s in 0..seqlen {
            let token = b * seqlen + s;
            if keep[token] {
                out.indices.push(token);
                out.packed.extend_from_slice(&hidden[token * dim..(token + 1) * dim]);
                count += 1;
            }
        }
        out.max_seqlen = out.max_seqlen.max(count);
        out.cu_seqlens.push(out.cu_seqlens[b] + count);
    }
    out
}

/// Why a list of token indices is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadIndex {
    /// Position of an index outside [0, tokens).
    OutOfRange(usize),
    /// Position of an index seen before.
    Duplicate(usize),
}

/// Checks that `indices` lie in [0, tokens) and, when `distinct`, that none repeats.
pub fn check_indices(indices: &[f64], tokens: usize, distinct: bool) -> Result<Vec<usize>, BadIndex> {
    let mut seen = vec![false; if distinct { tokens } else { 0 }];
    indices
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if !(v >= 0.0 && v < tokens as f64 && v.fract() == 0.0) {
                return Err(BadIndex::OutOfRange(i));
            }
            let t = v as usize;
            if distinct {
                if seen[t] {
                    return Err(BadIndex::Duplicate(i));
                }
                seen[t] = true;
            }
            Ok(t)
        })
        .collect()
}

/// hidden [tokens, dim] = 0 except hidden[indices[i]] = packed[i] (indices checked first).
pub fn pad(packed: &[f64], indices: &[usize], tokens: usize, dim: usize) -> Vec<f64> {
    let mut hidden = vec![0.0; tokens * dim];
    for (i, &t) in indices.iter().enumerate() {
        hidden[t * dim..(t + 1) * dim].copy_from_slice(&packed[i * dim..(i + 1) * dim]);
    }
    hidden
}

/// packed[i] = hidden[indices[i]] (indices checked first).
pub fn gather(hidden: &[f64], indices: &[usize], dim: usize) -> Vec<f64> {
    indices.iter().flat_map(|&t| hidden[t * dim..(t + 1) * dim].iter().copied()).collect()
}
