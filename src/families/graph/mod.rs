//! GlycanAA's graph blocks ("Modeling All-Atom Glycan Structures via Hierarchical Message
//! Passing"): torchdrug's relational graph convolution, whose dense path builds a mostly-zero
//! [N, R·C] update per node, and the segment readouts (sum, mean, max; GlycanAA's "dual" readout
//! is mean ‖ max). This layer holds the f64 references ([`cpu`]); the kernels `graph/rgcn` and
//! `graph/segment_readout` are issue 29's next steps.
//!
//! ```
//! use kiln::graph::cpu::{Readout, segment_readout};
//!
//! // Two graphs of 2 and 1 nodes, one channel.
//! let out = segment_readout(&[1.0, 3.0, 5.0], &[0, 2, 3], 1, Readout::Mean)?;
//! assert_eq!(out, vec![2.0, 5.0]);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Layer: families. Imports core.

pub mod cpu;
