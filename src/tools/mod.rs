//! Layer 4, tools: what the command line does, over the registry. Checking kernels against
//! their references (`check`), timing them (`bench`), the GPU-free performance model
//! (`model`, `occupancy`, `sass`, `build_info`), the last GPU measurement on record
//! (`perf_record`) and its charts (`plot`), `.npy` files for `kiln run` (`npy`), the progress
//! bar of long runs (`progress`) and
//! parameters as the command line gives them (`params`).
//!
//! May import: ops, families, core and bindings. Imported only by the crate root and the CLI.

pub mod bench;
pub mod build_info;
pub mod check;
pub mod model;
pub mod npy;
pub mod occupancy;
mod params;
pub mod perf_record;
pub mod plot;
pub mod progress;
pub mod sass;
pub mod sweep;
