//! Reading and writing `.npy` files for `kiln run`.
