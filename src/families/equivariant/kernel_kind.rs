//! Which kernels the tensor-product launches take: the channel-parallel ones (kiln's plans, CG
//! values compiled in) or, on request, the generic ones that read the plan's tables.

thread_local! {
    static TABLE_KERNELS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's tensor-product and convolution launches on the generic kernels,
/// which read the plan's CG tables as a C caller's own plan would give them (`wigner_cg` = 0),
/// instead of the channel-parallel kernels with the values compiled in: for the tests and
/// benchmarks that hold the two to the same reference.
#[doc(hidden)]
pub fn with_table_kernels<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TABLE_KERNELS.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TABLE_KERNELS.with(|t| t.replace(true)));
    f()
}

/// Whether [`with_table_kernels`] is in force on this thread (read by the launch code, which
/// only a build with a kernel library has).
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(super) fn table_kernels() -> bool {
    TABLE_KERNELS.with(|t| t.get())
}
