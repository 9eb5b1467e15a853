//! GLU MLP block.
