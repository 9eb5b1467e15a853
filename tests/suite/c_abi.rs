//! The C ABI's argument validation (kernels/include/kiln.h): every launcher checks its
//! arguments before touching memory or launching, so these run without a GPU; fake
//! pointers are never dereferenced because validation rejects the call first. They run against
//! each kernel library built in: the nvcc-built one (`cuda`) and the emulated one (`emu`, whose
//! launchers are the same sources compiled for the host: scripts/coverage.sh counts their lines).
#![cfg(any(feature = "cuda", feature = "emu"))]

macro_rules! c_abi_tests {
    ($module:ident, $ffi:path, $feature:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use std::ffi::{CStr, c_void};
            use std::ptr::{null, null_mut};

            use ffi::{kiln_dtype, kiln_status};
            use $ffi as ffi;

            const F32: kiln_dtype = kiln_dtype::KILN_DTYPE_F32;
            const BF16: kiln_dtype = kiln_dtype::KILN_DTYPE_BF16;
            /// A well-aligned address that is never dereferenced (validation fails first).
            const FAKE: usize = 0x1000_0000;

            fn p(addr: usize) -> *const c_void {
                addr as *const c_void
            }
            fn pm(addr: usize) -> *mut c_void {
                addr as *mut c_void
            }

            #[test]
            fn status_strings_and_version() {
                for code in 0..=8u32 {
                    // SAFETY: returns a static string for any code.
                    let s = unsafe { CStr::from_ptr(ffi::kiln_status_string(kiln_status(code))) };
                    assert!(!s.to_bytes().is_empty());
                }
                // SAFETY: pure functions.
                unsafe {
                    assert_eq!(ffi::kiln_version() as u32, ffi::KILN_ABI_VERSION);
                    assert_eq!(
                        CStr::from_ptr(ffi::kiln_status_string(kiln_status(99))).to_str().unwrap(),
                        "unknown kiln_status"
                    );
                }
            }

            #[test]
            fn invalid_arguments_get_distinct_codes() {
                // SAFETY: every call fails validation before any pointer is used.
                unsafe {
                    assert_eq!(
                        ffi::kiln_activation_relu_fwd(kiln_dtype(9), p(FAKE), pm(FAKE), 16, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_DTYPE
                    );
                    assert_eq!(
                        ffi::kiln_activation_relu_fwd(F32, p(FAKE), pm(FAKE), -1, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_activation_relu_fwd(F32, null(), pm(FAKE), 16, null_mut()),
                        kiln_status::KILN_ERROR_NULL_POINTER
                    );
                    assert_eq!(
                        ffi::kiln_activation_gelu_bwd(F32, p(FAKE), null(), pm(FAKE), 16, null_mut()),
                        kiln_status::KILN_ERROR_NULL_POINTER
                    );
                    assert_eq!(
                        ffi::kiln_activation_relu_fwd(F32, p(FAKE + 2), pm(FAKE), 16, null_mut()),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(
                        ffi::kiln_activation_relu_fwd(BF16, p(FAKE + 1), pm(FAKE), 16, null_mut()),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(
                        ffi::kiln_activation_smelu_fwd(F32, p(FAKE), pm(FAKE), 16, 0.0, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(
                        ffi::kiln_activation_xgelu_fwd(F32, p(FAKE), pm(FAKE), 16, f32::NAN, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(
                        ffi::kiln_activation_gsmelu_fwd(
                            F32,
                            p(FAKE),
                            pm(FAKE),
                            16,
                            -1.0,
                            0.5,
                            0.0,
                            1.0,
                            0.0,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    let slope = FAKE as *const f32;
                    assert_eq!(
                        ffi::kiln_activation_prelu_fwd(F32, p(FAKE), pm(FAKE), 16, slope, 3, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_activation_prelu_fwd(F32, p(FAKE), pm(FAKE), 16, slope, 0, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_activation_prelu_fwd(F32, p(FAKE), pm(FAKE), 16, null(), 4, null_mut()),
                        kiln_status::KILN_ERROR_NULL_POINTER
                    );
                    let theta = FAKE as *const f32;
                    let dtheta = FAKE as *mut f32;
                    assert_eq!(
                        ffi::kiln_activation_jumprelu_bwd(
                            F32,
                            p(FAKE),
                            p(FAKE),
                            pm(FAKE),
                            16,
                            theta,
                            4,
                            -1.0,
                            dtheta,
                            pm(FAKE),
                            1 << 20,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    // A requested gradient needs a workspace, and a large enough one.
                    let dalpha = FAKE as *mut f32;
                    assert_eq!(
                        ffi::kiln_activation_xsilu_bwd(
                            F32,
                            p(FAKE),
                            p(FAKE),
                            pm(FAKE),
                            1 << 20,
                            0.0,
                            dalpha,
                            null_mut(),
                            0,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_NULL_POINTER
                    );
                    let need = ffi::kiln_activation_workspace_bytes(1 << 20, 1);
                    assert!(need > 0);
                    assert_eq!(
                        ffi::kiln_activation_xsilu_bwd(
                            F32,
                            p(FAKE),
                            p(FAKE),
                            pm(FAKE),
                            1 << 20,
                            0.0,
                            dalpha,
                            pm(FAKE),
                            need - 4,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_WORKSPACE_TOO_SMALL
                    );
                }
            }

            #[test]
            fn workspace_query() {
                // SAFETY: a pure size computation.
                unsafe {
                    assert_eq!(ffi::kiln_activation_workspace_bytes(-1, 1), -1);
                    assert_eq!(ffi::kiln_activation_workspace_bytes(10, 0), -1);
                    assert_eq!(ffi::kiln_activation_workspace_bytes(10, 3), -1);
                    assert_eq!(ffi::kiln_activation_workspace_bytes(0, 4), 0);
                    // At most 8192 partials for a scalar, whatever n.
                    assert!(ffi::kiln_activation_workspace_bytes(1 << 34, 1) <= 8192 * 4);
                    // Per channel: at least one partial per channel, and enough for 4096 rows of 64.
                    let per_channel = ffi::kiln_activation_workspace_bytes(4096 * 64, 64);
                    assert!(per_channel >= 64 * 4 && per_channel % (64 * 4) == 0, "{per_channel}");
                }
            }

            #[test]
            fn empty_is_success_without_touching_pointers() {
                // SAFETY: n == 0 touches no tensor pointer.
                unsafe {
                    assert_eq!(
                        ffi::kiln_activation_gelu_fwd(BF16, null(), null_mut(), 0, null_mut()),
                        kiln_status::KILN_SUCCESS
                    );
                    assert_eq!(
                        ffi::kiln_activation_prelu_bwd(
                            F32,
                            null(),
                            null(),
                            null_mut(),
                            0,
                            null(),
                            1,
                            null_mut(),
                            null_mut(),
                            0,
                            null_mut()
                        ),
                        kiln_status::KILN_SUCCESS
                    );
                }
            }

            #[test]
            fn arith_validates_before_launching() {
                let (f, nf) = (FAKE as *const f32, FAKE as *mut f32);
                let (i, ni) = (FAKE as *const i32, FAKE as *mut i32);
                // SAFETY: every call fails validation before any pointer is used.
                unsafe {
                    let fwd = |dtype, x: usize, z: usize, prod: *mut f32, zeros: *mut i32, n: i64, eps: f32| {
                        ffi::kiln_arith_nmu_fwd(dtype, p(x), p(FAKE), n, 3, 2, eps, pm(z), prod, zeros, null_mut())
                    };
                    assert_eq!(fwd(kiln_dtype(9), FAKE, FAKE, nf, ni, 4, 0.0), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(fwd(F32, FAKE, FAKE, nf, ni, -1, 0.0), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(fwd(F32, FAKE, FAKE, nf, ni, 4, 1.5), kiln_status::KILN_ERROR_INVALID_VALUE);
                    assert_eq!(fwd(F32, FAKE, FAKE, nf, ni, 4, f32::NAN), kiln_status::KILN_ERROR_INVALID_VALUE);
                    assert_eq!(fwd(F32, FAKE, FAKE, nf, null_mut(), 4, 0.0), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(fwd(F32, 0, FAKE, nf, ni, 4, 0.0), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(fwd(BF16, FAKE + 1, FAKE, nf, ni, 4, 0.0), kiln_status::KILN_ERROR_MISALIGNED);
                    assert_eq!(
                        fwd(F32, FAKE, FAKE, (FAKE + 2) as *mut f32, ni, 4, 0.0),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(fwd(F32, FAKE, FAKE, nf, ni, 0, 0.0), kiln_status::KILN_SUCCESS);
                    assert_eq!(ffi::kiln_arith_nmu_workspace_bytes(4, -1, 2), -1);
                    assert_eq!(ffi::kiln_arith_nmu_workspace_bytes(4, 65535 * 64 + 1, 2), -1);
                    let bwd = |dtype, x: usize, ws: usize, bytes: i64, n: i64| {
                        ffi::kiln_arith_nmu_bwd(
                            dtype,
                            p(x),
                            p(FAKE),
                            p(FAKE),
                            f,
                            i,
                            n,
                            3,
                            2,
                            0.0,
                            pm(FAKE),
                            pm(FAKE),
                            pm(ws),
                            bytes,
                            null_mut(),
                        )
                    };
                    assert_eq!(bwd(kiln_dtype(9), FAKE, FAKE, 0, 4), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(bwd(F32, FAKE, FAKE, 0, 1 << 31), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(bwd(F32, 0, FAKE, 0, 4), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(bwd(F32, FAKE + 2, FAKE, 0, 4), kiln_status::KILN_ERROR_MISALIGNED);
                    assert_eq!(
                        ffi::kiln_arith_nmu_bwd(
                            F32,
                            p(FAKE),
                            p(FAKE),
                            p(FAKE),
                            f,
                            i,
                            4,
                            3,
                            2,
                            -0.5,
                            pm(FAKE),
                            pm(FAKE),
                            null_mut(),
                            0,
                            null_mut(),
                        ),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    // 600 rows over one weight tile: fixed partitions, a workspace wanted.
                    let need = ffi::kiln_arith_nmu_workspace_bytes(600, 3, 2);
                    assert!(need > 0);
                    assert_eq!(bwd(F32, FAKE, 0, need, 600), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(bwd(F32, FAKE, FAKE, need - 1, 600), kiln_status::KILN_ERROR_WORKSPACE_TOO_SMALL);
                    // Regularisers.
                    let (nau, lin) =
                        (ffi::kiln_arith_unit::KILN_ARITH_NAU, ffi::kiln_arith_reg_shape::KILN_ARITH_REG_LINEAR);
                    let reg = |dtype, unit, shape, w: usize, n: i64, out: *mut f32, ws: usize, bytes: i64| {
                        ffi::kiln_arith_reg_fwd(dtype, unit, shape, p(w), n, out, nf, nf, pm(ws), bytes, null_mut())
                    };
                    let need = ffi::kiln_arith_reg_workspace_bytes(6);
                    assert_eq!(ffi::kiln_arith_reg_workspace_bytes(0), -1);
                    assert_eq!(
                        reg(kiln_dtype(9), nau, lin, FAKE, 6, nf, FAKE, need),
                        kiln_status::KILN_ERROR_INVALID_DTYPE
                    );
                    assert_eq!(
                        reg(F32, ffi::kiln_arith_unit(7), lin, FAKE, 6, nf, FAKE, need),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(
                        reg(F32, nau, ffi::kiln_arith_reg_shape(5), FAKE, 6, nf, FAKE, need),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(reg(F32, nau, lin, FAKE, 0, nf, FAKE, need), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(reg(F32, nau, lin, 0, 6, nf, FAKE, need), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(
                        reg(F32, nau, lin, FAKE, 6, (FAKE + 1) as *mut f32, FAKE, need),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(
                        reg(F32, nau, lin, FAKE, 6, nf, FAKE, need - 1),
                        kiln_status::KILN_ERROR_WORKSPACE_TOO_SMALL
                    );
                    let regb = |dtype, unit, shape, w: usize, n: i64, ds: *const f32| {
                        ffi::kiln_arith_reg_bwd(dtype, unit, shape, p(w), n, ds, f, pm(FAKE), null_mut())
                    };
                    assert_eq!(regb(kiln_dtype(9), nau, lin, FAKE, 6, f), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(
                        regb(F32, ffi::kiln_arith_unit(7), lin, FAKE, 6, f),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(regb(F32, nau, lin, FAKE, 0, f), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(regb(F32, nau, lin, FAKE, 6, null()), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(regb(BF16, nau, lin, FAKE + 1, 6, f), kiln_status::KILN_ERROR_MISALIGNED);
                    // The NAU's weight passes.
                    let sq = ffi::kiln_arith_reg_shape::KILN_ARITH_REG_SQUARED;
                    let weights = |dtype, shape, w: usize, n: i64, out: *mut f32, ws: usize, bytes: i64| {
                        ffi::kiln_arith_nau_weights(
                            dtype,
                            p(w),
                            n,
                            pm(FAKE),
                            shape,
                            out,
                            nf,
                            nf,
                            pm(ws),
                            bytes,
                            null_mut(),
                        )
                    };
                    assert_eq!(
                        weights(kiln_dtype(9), lin, FAKE, 6, nf, FAKE, need),
                        kiln_status::KILN_ERROR_INVALID_DTYPE
                    );
                    assert_eq!(
                        weights(F32, ffi::kiln_arith_reg_shape(5), FAKE, 6, nf, FAKE, need),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(weights(F32, sq, FAKE, -1, nf, FAKE, need), kiln_status::KILN_ERROR_INVALID_SIZE);
                    // The regularisers are means: no weights is an error with them, nothing to do without.
                    assert_eq!(weights(F32, sq, FAKE, 0, nf, FAKE, need), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(
                        ffi::kiln_arith_nau_weights(
                            F32,
                            p(0),
                            0,
                            pm(0),
                            sq,
                            null_mut(),
                            null_mut(),
                            null_mut(),
                            pm(0),
                            0,
                            null_mut()
                        ),
                        kiln_status::KILN_SUCCESS
                    );
                    assert_eq!(weights(F32, sq, 0, 6, nf, FAKE, need), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(weights(F32, sq, FAKE, 6, nf, 0, need), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(weights(BF16, sq, FAKE + 1, 6, nf, FAKE, need), kiln_status::KILN_ERROR_MISALIGNED);
                    assert_eq!(
                        weights(F32, sq, FAKE, 6, nf, FAKE, need - 1),
                        kiln_status::KILN_ERROR_WORKSPACE_TOO_SMALL
                    );
                    let nau_dw = |dtype, shape, w: usize, n: i64, ds: *const f32, db: *const f32| {
                        ffi::kiln_arith_nau_dw(dtype, p(w), n, pm(FAKE), shape, ds, db, null_mut())
                    };
                    assert_eq!(nau_dw(kiln_dtype(9), lin, FAKE, 6, f, f), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(nau_dw(F32, lin, FAKE, 6, f, null()), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(
                        nau_dw(F32, ffi::kiln_arith_reg_shape(5), FAKE, 6, f, f),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(nau_dw(F32, lin, FAKE, -1, f, f), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(nau_dw(F32, lin, FAKE, 0, f, f), kiln_status::KILN_SUCCESS);
                    assert_eq!(nau_dw(F32, lin, 0, 6, f, f), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(nau_dw(BF16, lin, FAKE + 1, 6, null(), null()), kiln_status::KILN_ERROR_MISALIGNED);
                    assert_eq!(
                        nau_dw(F32, lin, FAKE, 6, (FAKE + 2) as *const f32, f),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    // The NALU's passes.
                    let bad = kiln_dtype(9);
                    let weights = |dtype, h: usize, n: i64, w: *mut f32| {
                        ffi::kiln_arith_nalu_weights(dtype, p(h), p(FAKE), p(FAKE), n, w, nf, null_mut())
                    };
                    assert_eq!(weights(bad, FAKE, 6, nf), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(weights(F32, FAKE, -1, nf), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(weights(F32, 0, 0, nf), kiln_status::KILN_SUCCESS);
                    assert_eq!(weights(F32, 0, 6, nf), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(weights(F32, FAKE, 6, null_mut()), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(weights(BF16, FAKE + 1, 6, nf), kiln_status::KILN_ERROR_MISALIGNED);
                    assert_eq!(weights(F32, FAKE, 6, (FAKE + 2) as *mut f32), kiln_status::KILN_ERROR_MISALIGNED);
                    let log = |dtype, x: usize, n: i64, eps: f32| {
                        ffi::kiln_arith_nalu_log(dtype, p(x), n, eps, nf, null_mut(), null_mut())
                    };
                    assert_eq!(log(bad, FAKE, 6, 1e-7), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(log(F32, FAKE, 6, 0.0), kiln_status::KILN_ERROR_INVALID_VALUE);
                    assert_eq!(log(F32, FAKE, 6, f32::NAN), kiln_status::KILN_ERROR_INVALID_VALUE);
                    assert_eq!(log(F32, FAKE, -1, 1e-7), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(log(F32, 0, 0, 1e-7), kiln_status::KILN_SUCCESS);
                    assert_eq!(log(F32, 0, 6, 1e-7), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(log(BF16, FAKE + 1, 6, 1e-7), kiln_status::KILN_ERROR_MISALIGNED);
                    let combine = |dtype, a: *const f32, batch: i64, out: i64| {
                        ffi::kiln_arith_nalu_combine_fwd(dtype, a, f, f, p(FAKE), batch, out, pm(FAKE), null_mut())
                    };
                    assert_eq!(combine(bad, f, 2, 3), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(combine(F32, f, -2, 3), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(combine(F32, f, 1 << 40, 1 << 20), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(combine(F32, null(), 0, 3), kiln_status::KILN_SUCCESS);
                    assert_eq!(combine(F32, null(), 2, 3), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(combine(F32, (FAKE + 2) as *const f32, 2, 3), kiln_status::KILN_ERROR_MISALIGNED);
                    let cbwd = |dtype, dy: usize, batch: i64, da: *mut f32| {
                        ffi::kiln_arith_nalu_combine_bwd(
                            dtype,
                            f,
                            f,
                            f,
                            p(FAKE),
                            p(dy),
                            batch,
                            3,
                            da,
                            nf,
                            nf,
                            null_mut(),
                        )
                    };
                    assert_eq!(cbwd(bad, FAKE, 2, nf), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(cbwd(F32, FAKE, -2, nf), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(cbwd(F32, 0, 0, nf), kiln_status::KILN_SUCCESS);
                    assert_eq!(cbwd(F32, 0, 2, nf), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(cbwd(F32, FAKE, 2, null_mut()), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(cbwd(BF16, FAKE + 1, 2, nf), kiln_status::KILN_ERROR_MISALIGNED);
                    let dx = |dtype, x: usize, n: i64, eps: f32| {
                        ffi::kiln_arith_nalu_dx(dtype, p(x), n, eps, f, f, pm(FAKE), null_mut())
                    };
                    assert_eq!(dx(bad, FAKE, 6, 1e-7), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(dx(F32, FAKE, 6, 2.0), kiln_status::KILN_ERROR_INVALID_VALUE);
                    assert_eq!(dx(F32, FAKE, -6, 1e-7), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(dx(F32, 0, 0, 1e-7), kiln_status::KILN_SUCCESS);
                    assert_eq!(dx(F32, 0, 6, 1e-7), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(dx(BF16, FAKE + 1, 6, 1e-7), kiln_status::KILN_ERROR_MISALIGNED);
                    let dweights = |dtype, h: usize, n: i64, out: i64, db: *const f32| {
                        ffi::kiln_arith_nalu_dweights(
                            dtype,
                            p(h),
                            p(FAKE),
                            f,
                            f,
                            db,
                            n,
                            out,
                            pm(FAKE),
                            pm(FAKE),
                            pm(FAKE),
                            pm(FAKE),
                            null_mut(),
                        )
                    };
                    assert_eq!(dweights(bad, FAKE, 6, 2, f), kiln_status::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(dweights(F32, FAKE, -6, 2, f), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(dweights(F32, FAKE, 6, -2, f), kiln_status::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(dweights(F32, 0, 0, 0, null()), kiln_status::KILN_SUCCESS);
                    assert_eq!(dweights(F32, 0, 6, 2, f), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(dweights(F32, FAKE, 0, 2, null()), kiln_status::KILN_ERROR_NULL_POINTER);
                    assert_eq!(dweights(BF16, FAKE + 1, 6, 2, f), kiln_status::KILN_ERROR_MISALIGNED);
                }
            }

            #[test]
            fn glu_norm_and_padding_validate_before_launching() {
                let (f, nf) = (FAKE as *const f32, FAKE as *mut f32);
                // SAFETY: every call fails validation (or is empty) before any pointer is used.
                unsafe {
                    // GLU
                    assert_eq!(
                        ffi::kiln_glu_swiglu_fwd(kiln_dtype(9), p(FAKE), p(FAKE), 8, pm(FAKE), 4, 8, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_DTYPE
                    );
                    assert_eq!(
                        ffi::kiln_glu_swiglu_fwd(F32, p(FAKE), p(FAKE), 8, pm(FAKE), 4, 0, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_glu_swiglu_fwd(F32, p(FAKE), p(FAKE), 7, pm(FAKE), 4, 8, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_glu_swiglu_fwd(F32, null(), p(FAKE), 8, pm(FAKE), 4, 8, null_mut()),
                        kiln_status::KILN_ERROR_NULL_POINTER
                    );
                    assert_eq!(
                        ffi::kiln_glu_atglu_fwd(F32, p(FAKE), p(FAKE), 8, pm(FAKE), 4, 8, 3, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(
                        ffi::kiln_glu_xgeglu_fwd(F32, p(FAKE), p(FAKE), 8, pm(FAKE), 4, 8, f32::NAN, 1, null_mut()),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(
                        ffi::kiln_glu_swiglu_fwd(F32, null(), null(), 8, null_mut(), 0, 8, null_mut()),
                        kiln_status::KILN_SUCCESS
                    );
                    assert_eq!(ffi::kiln_glu_workspace_bytes(-1, 8), -1);
                    // Norm
                    assert_eq!(
                        ffi::kiln_norm_layernorm_fwd(
                            F32,
                            p(FAKE),
                            null(),
                            null(),
                            null(),
                            4,
                            0,
                            1e-5,
                            pm(FAKE),
                            null_mut(),
                            nf,
                            nf,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_norm_layernorm_fwd(
                            F32,
                            p(FAKE),
                            null(),
                            null(),
                            null(),
                            4,
                            65537,
                            1e-5,
                            pm(FAKE),
                            null_mut(),
                            nf,
                            nf,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_SIZE
                    );
                    assert_eq!(
                        ffi::kiln_norm_rmsnorm_fwd(
                            F32,
                            p(FAKE),
                            null(),
                            f,
                            null(),
                            4,
                            8,
                            0.0,
                            pm(FAKE),
                            null_mut(),
                            nf,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_VALUE
                    );
                    assert_eq!(
                        ffi::kiln_norm_rmsnorm_fwd(
                            F32,
                            null(),
                            null(),
                            f,
                            null(),
                            4,
                            8,
                            1e-5,
                            pm(FAKE),
                            null_mut(),
                            nf,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_NULL_POINTER
                    );
                    assert_eq!(
                        ffi::kiln_norm_rmsnorm_fwd(
                            BF16,
                            null(),
                            null(),
                            null(),
                            null(),
                            0,
                            8,
                            1e-5,
                            null_mut(),
                            null_mut(),
                            null_mut(),
                            null_mut()
                        ),
                        kiln_status::KILN_SUCCESS
                    );
                    // x of an f32 call not 4-byte aligned; dy of an f32 backward not either.
                    assert_eq!(
                        ffi::kiln_norm_rmsnorm_fwd(
                            F32,
                            p(FAKE + 2),
                            null(),
                            f,
                            null(),
                            4,
                            8,
                            1e-5,
                            pm(FAKE),
                            null_mut(),
                            nf,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(
                        ffi::kiln_norm_rmsnorm_bwd(
                            F32,
                            p(FAKE + 2),
                            p(FAKE),
                            null(),
                            f,
                            null(),
                            null(),
                            4,
                            8,
                            pm(FAKE),
                            null_mut(),
                            null_mut(),
                            null_mut(),
                            null_mut(),
                            0,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(ffi::kiln_norm_workspace_bytes(4, 0), -1);
                    // Padding
                    let (i, ni) = (FAKE as *const i32, FAKE as *mut i32);
                    assert_eq!(
                        ffi::kiln_padding_workspace_bytes(1 << 16, 1 << 15),
                        -1,
                        "batch·seqlen must fit int32 indices"
                    );
                    assert_eq!(
                        ffi::kiln_padding_unpad_fwd(
                            F32,
                            p(FAKE),
                            kiln_dtype::KILN_DTYPE_U8,
                            null(),
                            null(),
                            2,
                            4,
                            8,
                            8,
                            pm(FAKE),
                            ni,
                            ni,
                            ni,
                            ni,
                            pm(FAKE),
                            1 << 20,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_NULL_POINTER,
                        "neither a mask nor lengths"
                    );
                    assert_eq!(
                        ffi::kiln_padding_unpad_fwd(
                            F32,
                            p(FAKE),
                            kiln_dtype::KILN_DTYPE_U8,
                            p(FAKE),
                            i,
                            2,
                            4,
                            8,
                            8,
                            pm(FAKE),
                            ni,
                            ni,
                            ni,
                            ni,
                            pm(FAKE),
                            1 << 20,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_VALUE,
                        "both a mask and lengths"
                    );
                    assert_eq!(
                        ffi::kiln_padding_unpad_fwd(
                            F32,
                            p(FAKE),
                            kiln_dtype::KILN_DTYPE_F32,
                            p(FAKE),
                            null(),
                            2,
                            4,
                            8,
                            8,
                            pm(FAKE),
                            ni,
                            ni,
                            ni,
                            ni,
                            pm(FAKE),
                            1 << 20,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_DTYPE,
                        "an f32 mask"
                    );
                    assert_eq!(
                        ffi::kiln_padding_pad_fwd(
                            F32,
                            p(FAKE),
                            i,
                            null(),
                            4,
                            2,
                            4,
                            0,
                            pm(FAKE),
                            ni,
                            pm(FAKE),
                            1 << 20,
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_INVALID_SIZE,
                        "dim 0"
                    );
                    assert_eq!(
                        ffi::kiln_padding_gather_fwd(
                            F32,
                            p(FAKE),
                            i,
                            null(),
                            4,
                            2,
                            4,
                            8,
                            pm(FAKE),
                            null_mut(),
                            null_mut()
                        ),
                        kiln_status::KILN_ERROR_NULL_POINTER,
                        "no status word"
                    );
                }
            }

            /// The arguments of one kiln_attention_alibi_fwd call: valid defaults (fake, aligned pointers),
            /// each test changes one.
            #[derive(Clone, Copy)]
            struct AttnCall {
                dtype: kiln_dtype,
                q: usize,
                k: usize,
                cu: usize,
                slopes: usize,
                positions: usize,
                total_q: i64,
                total_k: i64,
                heads: i64,
                heads_k: i64,
                head_dim: i64,
                scale: f32,
            }

            impl AttnCall {
                fn valid() -> AttnCall {
                    AttnCall {
                        dtype: BF16,
                        q: FAKE,
                        k: FAKE,
                        cu: FAKE,
                        slopes: 0,
                        positions: 0,
                        total_q: 16,
                        total_k: 16,
                        heads: 6,
                        heads_k: 2,
                        head_dim: 64,
                        scale: 0.125,
                    }
                }

                /// # Safety
                /// Only for calls that validation rejects (or that have nothing to do).
                unsafe fn run(self) -> kiln_status {
                    let (cu, f) = (self.cu as *const i32, |a: usize| a as *const f32);
                    // SAFETY: forwarded from the caller: the call is rejected before any pointer is used.
                    unsafe {
                        ffi::kiln_attention_alibi_fwd(
                            self.dtype,
                            p(self.q),
                            p(self.k),
                            p(FAKE),
                            cu,
                            cu,
                            f(self.slopes),
                            0,
                            f(self.positions),
                            2,
                            self.total_q,
                            self.total_k,
                            self.heads,
                            self.heads_k,
                            self.head_dim,
                            8,
                            1,
                            std::ptr::null(),
                            self.scale,
                            pm(FAKE),
                            FAKE as *mut f32,
                            null_mut(),
                        )
                    }
                }
            }

            #[test]
            fn attention_validates_before_launching() {
                let v = AttnCall::valid();
                let cases: [(AttnCall, kiln_status); 11] = [
                    (AttnCall { dtype: F32, ..v }, kiln_status::KILN_ERROR_INVALID_DTYPE),
                    (AttnCall { dtype: kiln_dtype(9), ..v }, kiln_status::KILN_ERROR_INVALID_DTYPE),
                    (AttnCall { heads_k: 4, ..v }, kiln_status::KILN_ERROR_INVALID_SIZE),
                    (AttnCall { head_dim: 80, ..v }, kiln_status::KILN_ERROR_INVALID_SIZE),
                    (AttnCall { total_q: -1, ..v }, kiln_status::KILN_ERROR_INVALID_SIZE),
                    (AttnCall { scale: f32::INFINITY, ..v }, kiln_status::KILN_ERROR_INVALID_VALUE),
                    (AttnCall { positions: FAKE, ..v }, kiln_status::KILN_ERROR_INVALID_VALUE),
                    (AttnCall { positions: FAKE, slopes: FAKE, total_k: 8, ..v }, kiln_status::KILN_ERROR_INVALID_SIZE),
                    (AttnCall { cu: 0, ..v }, kiln_status::KILN_ERROR_NULL_POINTER),
                    (AttnCall { q: 0, ..v }, kiln_status::KILN_ERROR_NULL_POINTER),
                    (AttnCall { k: FAKE + 8, ..v }, kiln_status::KILN_ERROR_MISALIGNED),
                ];
                for (i, (call, want)) in cases.into_iter().enumerate() {
                    // SAFETY: every case fails validation before any pointer is used.
                    assert_eq!(unsafe { call.run() }, want, "case {i}");
                }
                // Nothing to compute: success without touching a pointer.
                // SAFETY: total_q == 0 returns before any pointer is used.
                assert_eq!(unsafe { AttnCall { total_q: 0, q: 0, ..v }.run() }, kiln_status::KILN_SUCCESS);
                // SAFETY: pure functions.
                unsafe {
                    for d in [32, 64, 96, 128] {
                        assert_eq!(ffi::kiln_attention_head_dim_supported(d), 1, "d = {d}");
                    }
                    for d in [0, 16, 80, 256] {
                        assert_eq!(ffi::kiln_attention_head_dim_supported(d), 0, "d = {d}");
                    }
                }
            }
        }
    };
}

c_abi_tests!(emu, kiln::ffi_emu, "emu");
c_abi_tests!(cuda, kiln::ffi, "cuda");

/// The nvcc-built library with no driver to launch on (the emulated one needs none).
#[cfg(feature = "cuda")]
#[test]
fn a_launch_without_a_driver_is_a_cuda_error_not_a_crash() {
    use kiln::ffi::{self, kiln_dtype, kiln_status};
    if kiln::cuda_device_count().is_ok() {
        eprintln!("skipped: a GPU is present (this test needs its absence)");
        return;
    }
    let fake = 0x1000_0000usize;
    // SAFETY: with no driver the runtime refuses the launch; the fake pointers are never used.
    unsafe {
        let s = ffi::kiln_activation_relu_fwd(
            kiln_dtype::KILN_DTYPE_F32,
            fake as *const std::ffi::c_void,
            fake as *mut std::ffi::c_void,
            16,
            std::ptr::null_mut(),
        );
        assert_eq!(s, kiln_status::KILN_ERROR_CUDA);
        assert_ne!(ffi::kiln_last_cuda_error(), 0);
    }
}

/// The launchers that zero an empty sum themselves with cudaMemsetAsync (a parameter gradient,
/// dw, dγ and dβ, gather's status word, the one-pass unpad's workspace) return the memset's
/// failure as KILN_ERROR_CUDA with
/// kiln_last_cuda_error() set, as they do a failed launch. The emulator refuses a memset that
/// runs past the end of its allocation with cudaErrorInvalidValue, as CUDA's runtime does, so
/// each buffer below is one element short.
#[cfg(feature = "emu")]
#[test]
fn emu_a_failed_memset_is_a_cuda_error() {
    use std::ptr::{null, null_mut};

    use crate::activation::emu_mem::Buf;
    use ffi::{kiln_dtype, kiln_status};
    use kiln::ffi_emu as ffi;

    const INVALID_VALUE: i32 = 1; // cudaErrorInvalidValue
    let f32_ = kiln_dtype::KILN_DTYPE_F32;
    let (one_float, half_float, w) = (Buf::exact(4), Buf::exact(2), Buf::zeroed(8));
    let check = |what: &str, status: kiln_status| {
        assert_eq!(status, kiln_status::KILN_ERROR_CUDA, "{what}");
        // SAFETY: reads this thread's last CUDA error.
        assert_eq!(unsafe { ffi::kiln_last_cuda_error() }, INVALID_VALUE, "{what}");
    };
    // SAFETY: every tensor is empty except the gradient the call zeroes (and dw's w, never read
    // without edges); each of those is a live emulated buffer.
    unsafe {
        // activation: n == 0 with 2 channels zeroes dslope [2].
        let s = ffi::kiln_activation_prelu_bwd(
            f32_,
            null(),
            null(),
            null_mut(),
            0,
            null(),
            2,
            one_float.at::<f32>(0).cast(),
            null_mut(),
            0,
            null_mut(),
        );
        check("prelu dslope [2]", s);
        // glu: rows == 0 zeroes dα [1].
        let s = ffi::kiln_glu_xswiglu_bwd(
            f32_,
            null(),
            null(),
            8,
            null(),
            null_mut(),
            null_mut(),
            8,
            0,
            8,
            0.0,
            1,
            half_float.at::<u16>(0).cast(),
            null_mut(),
            0,
            null_mut(),
        );
        check("xswiglu dalpha [1]", s);
        // norm: rows == 0 zeroes dγ [2] (and dβ, absent here).
        let s = ffi::kiln_norm_layernorm_bwd(
            f32_,
            null(),
            null(),
            null(),
            null(),
            null(),
            null(),
            null(),
            0,
            2,
            null_mut(),
            null_mut(),
            one_float.at::<f32>(0).cast(),
            null_mut(),
            null_mut(),
            0,
            null_mut(),
        );
        check("layernorm dgamma [2]", s);
        // equivariant: no edges with shared weights zeroes dw [weight_numel]; a plan of sizes
        // and no path needs no table.
        let plan = ffi::kiln_tp_plan {
            paths: null(),
            n_paths: 0,
            cg_ijk: null(),
            cg_val: null(),
            dim1: 1,
            dim2: 1,
            dim_out: 1,
            weight_numel: 2,
            cg_val_f64: null(),
            coef_f64: null(),
            wigner_cg: 0,
        };
        let s = ffi::kiln_equivariant_tp_bwd(
            f32_,
            &plan,
            null(),
            null(),
            w.at::<f32>(0),
            1,
            null(),
            0,
            null_mut(),
            null_mut(),
            one_float.at::<f32>(0).cast(),
            null_mut(),
            0,
            null_mut(),
        );
        check("tp dw [2]", s);
        // equivariant: a double backward without upstream gradients zeroes its outputs, gx
        // [1] first (the inputs are never read: no pass runs).
        let (zeros, ws) = (Buf::zeroed(8), Buf::zeroed(8));
        let s = ffi::kiln_equivariant_tp_bwd2(
            f32_,
            &plan,
            zeros.at::<f32>(0).cast(),
            zeros.at::<f32>(0).cast(),
            w.at::<f32>(0),
            1,
            zeros.at::<f32>(0).cast(),
            null(),
            null(),
            null(),
            1,
            half_float.at::<u16>(0).cast(),
            zeros.at::<f32>(0).cast(),
            zeros.at::<f32>(0).cast(),
            zeros.at::<f32>(0).cast(),
            ws.at::<f32>(0).cast(),
            8,
            null_mut(),
        );
        check("tp bwd2 gx [1]", s);
        // arith: an NMU backward over an empty batch zeroes dW [out, in] = [1, 1] (the inputs
        // are never read).
        let s = ffi::kiln_arith_nmu_bwd(
            f32_,
            null(),
            null(),
            null(),
            null(),
            null(),
            0,
            1,
            1,
            0.0,
            null_mut(),
            half_float.at::<u16>(0).cast(),
            null_mut(),
            0,
            null_mut(),
        );
        check("nmu dw [1, 1]", s);
        // padding: gather clears its status word [1] before anything else.
        let s = ffi::kiln_padding_gather_fwd(
            f32_,
            null(),
            null(),
            null(),
            0,
            0,
            0,
            1,
            null_mut(),
            half_float.at::<u16>(0).cast(),
            null_mut(),
        );
        check("gather status [1]", s);
        // padding: the one-pass unpad (a mask, capacity = every token) zeroes the look-back
        // state it is told the workspace holds (20 bytes for one tile), 4 bytes past this one.
        let (hidden, mask) = (Buf::with(&[1.0f32, 2.0], 0), Buf::with(&[1u8, 1], 0));
        let (indices, cu, counts, status, workspace) =
            (Buf::zeroed(8), Buf::zeroed(8), Buf::zeroed(8), Buf::zeroed(4), Buf::exact(16));
        let ws_bytes = ffi::kiln_padding_workspace_bytes(1, 2);
        assert_eq!(ws_bytes, 20, "one tile's word and three counters");
        let s = ffi::kiln_padding_unpad_fwd(
            f32_,
            hidden.at::<f32>(0).cast(),
            kiln_dtype::KILN_DTYPE_U8,
            mask.at::<u8>(0).cast_const().cast(),
            null(),
            1,
            2,
            1,
            2,
            null_mut(),
            indices.at::<i32>(0).cast(),
            cu.at::<i32>(0).cast(),
            counts.at::<i32>(0).cast(),
            status.at::<i32>(0).cast(),
            workspace.at::<i32>(0).cast(),
            ws_bytes,
            null_mut(),
        );
        check("unpad look-back state [20 bytes]", s);
    }
}
