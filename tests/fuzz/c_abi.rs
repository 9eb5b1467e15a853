//! The C ABI's argument validation (kernels/include/kiln.h), fuzzed through the emulated library
//! (`kiln::ffi_emu`, the same launchers renamed `kiln_emu_*`), over every launcher of every
//! family with one generic harness.
//!
//! A case picks a launcher and raw arguments: a dtype code (invalid enum values included:
//! `kiln_dtype` is a bindgen newtype over `c_uint`, so any code is a valid Rust value), sizes
//! (0, small, negative, huge, products that overflow), scalars (NaN, infinities, subnormals),
//! enum-like integers, a pointer mode per buffer (real, NULL, misaligned by 1..15 bytes, or
//! aliased with its input where the header allows it) and a workspace size relative to the
//! launcher's own query.
//!
//! Each launcher's builder below is a MODEL of its contract as kiln.h states it: it declares the
//! buffers the call reads and writes (element size, count, which may be NULL, alignment) and
//! says which arguments break the contract. From that the harness knows a verdict:
//! - invalid: the call must return an argument error (1..=6), the documented one when the
//!   arguments break one rule only;
//! - valid: the call must succeed;
//! - unsure: where kiln.h leaves it open (an undocumented limit, an empty problem with a NULL
//!   pointer, a workspace between the dtype's need and the query's answer): either.
//!
//! Every buffer is real emulated memory (kiln_emu_malloc, redzoned, checked mode on), filled with
//! a pattern (or valid index data) through kiln_emu_memcpy, so the emulator counts it written,
//! and read back after the call. For every call: it returns; the status is never KILN_ERROR_CUDA(_PENDING) (the
//! emulator's findings: out of bounds, races, uninitialised reads, come back that way); on any
//! non-success status every buffer is byte for byte unchanged; on success the inputs are.
//!
//! Calls whose contract the harness cannot satisfy are not made: a valid call on buffers larger
//! than `CAP_BYTES` (a launcher cannot know a buffer's size, so it would read past a smaller
//! one), or one whose index data cannot be valid (an edge of a graph without nodes). Invalid
//! calls are made on buffers cut to `SMALL_BYTES`: the launcher must refuse them before reading.

use std::collections::BTreeSet;
use std::ffi::{CStr, c_void};
use std::ptr::{null, null_mut};

use kiln::ffi_emu::{self as ffi, kiln_dtype, kiln_sh_normalization, kiln_status, kiln_tp_path, kiln_tp_plan};
use proptest::prelude::*;

use super::{Tally, config};

// ---------------------------------------------------------------------------------------------
// Status codes and dtypes
// ---------------------------------------------------------------------------------------------

const SUCCESS: u32 = kiln_status::KILN_SUCCESS.0;
const NULL: u32 = kiln_status::KILN_ERROR_NULL_POINTER.0;
const SIZE: u32 = kiln_status::KILN_ERROR_INVALID_SIZE.0;
const DTYPE: u32 = kiln_status::KILN_ERROR_INVALID_DTYPE.0;
const VALUE: u32 = kiln_status::KILN_ERROR_INVALID_VALUE.0;
const MISALIGNED: u32 = kiln_status::KILN_ERROR_MISALIGNED.0;
const WORKSPACE: u32 = kiln_status::KILN_ERROR_WORKSPACE_TOO_SMALL.0;
const CUDA: u32 = kiln_status::KILN_ERROR_CUDA.0;
const CUDA_PENDING: u32 = kiln_status::KILN_ERROR_CUDA_PENDING.0;

const F32: u32 = kiln_dtype::KILN_DTYPE_F32.0;
const F16: u32 = kiln_dtype::KILN_DTYPE_F16.0;
const BF16: u32 = kiln_dtype::KILN_DTYPE_BF16.0;
const I32: u32 = kiln_dtype::KILN_DTYPE_I32.0;
const U8: u32 = kiln_dtype::KILN_DTYPE_U8.0;
const F64: u32 = kiln_dtype::KILN_DTYPE_F64.0;

/// The storage dtypes of every family but equivariant, and of equivariant.
const FLOATS: &[u32] = &[F32, F16, BF16];
const FLOATS_F64: &[u32] = &[F32, F16, BF16, F64];
const HALVES: &[u32] = &[F16, BF16];

/// Bytes of every buffer of a call the harness makes when the model says it may succeed.
const CAP_BYTES: u64 = 1 << 20;
/// Bytes of a buffer of a call that must be refused, when its true size is larger.
const SMALL_BYTES: u64 = 256;
/// Room after a buffer for a misaligned pointer into it.
const SLACK: u64 = 16;
/// Most elements of index data the harness builds: past it the buffers exceed the cap anyway.
const MAX_DATA: usize = (CAP_BYTES / 4) as usize;

// ---------------------------------------------------------------------------------------------
// A case
// ---------------------------------------------------------------------------------------------

/// How a buffer's pointer is passed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ptr {
    Real,
    Null,
    /// The allocation plus 1..=15 bytes.
    Offset(u8),
    /// The same pointer as the input the header lets this output alias (Real where none).
    Alias,
}

/// The workspace size passed, relative to the launcher's query.
#[derive(Clone, Copy, Debug)]
enum Ws {
    Exact,
    Less(u8),
    Zero,
    Negative,
    Huge,
}

/// Slots per case: more than any launcher's buffers.
const SLOTS: usize = 24;

#[derive(Clone, Debug)]
struct Case {
    launcher: usize,
    dtype: u32,
    /// A second dtype (padding's mask dtype).
    aux_dtype: u32,
    sizes: [i64; 8],
    scalars: [f32; 5],
    ints: [i32; 4],
    ptrs: [Ptr; SLOTS],
    ws: Ws,
    /// Index data: 0, 1 valid; 2 zeros; 3 the fill pattern (out of range).
    fill: u8,
}

fn size() -> impl Strategy<Value = i64> {
    prop_oneof![
        20 => 0i64..24,
        4 => 24i64..200,
        1 => prop::sample::select(vec![-1i64, -2, -7, -(1 << 31), i64::MIN, i64::MIN + 1]),
        1 => prop::sample::select(vec![
            1i64 << 16,
            (1 << 16) + 1,
            (1 << 30) + 1,
            (1 << 31) - 1,
            1 << 31,
            (1 << 31) + 1,
            1 << 32,
            (1 << 32) + 1,
            1 << 40,
            1 << 50,
            (1 << 61) + 1,
            1 << 62,
            i64::MAX / 4 + 1,
            i64::MAX / 2 + 1,
            i64::MAX - 1,
            i64::MAX,
        ]),
    ]
}

fn scalar() -> impl Strategy<Value = f32> {
    prop_oneof![
        10 => prop::sample::select(vec![0.0f32, 0.1, 0.5, 1.0, -0.3, 1e-5, 2.0, 0.125]),
        2 => prop::sample::select(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1.0,
            -0.0,
            1e-40,
            f32::MIN_POSITIVE,
            f32::MAX,
            -f32::MAX,
            1e30,
            -1e30,
        ]),
    ]
}

fn int() -> impl Strategy<Value = i32> {
    prop_oneof![8 => 0i32..6, 1 => prop::sample::select(vec![-1i32, 6, 7, 100, i32::MIN, i32::MAX])]
}

fn ptr() -> impl Strategy<Value = Ptr> {
    prop_oneof![90 => Just(Ptr::Real), 2 => Just(Ptr::Null), 2 => (1u8..16).prop_map(Ptr::Offset), 4 => Just(Ptr::Alias)]
}

fn case(launchers: usize) -> impl Strategy<Value = Case> {
    // Mostly a storage dtype of the families (f64 only the equivariant one takes), the rest
    // the index dtypes and codes outside the enum.
    let dtype = prop_oneof![
        16 => 0u32..3,
        3 => 3u32..6,
        1 => prop::sample::select(vec![6u32, 7, 255, 0x8000_0000, u32::MAX]),
    ];
    let aux = prop_oneof![6 => Just(U8), 6 => Just(I32), 1 => 0u32..8, 1 => Just(u32::MAX)];
    let ws = prop_oneof![
        12 => Just(Ws::Exact),
        1 => (1u8..=16).prop_map(Ws::Less),
        1 => Just(Ws::Zero),
        1 => Just(Ws::Negative),
        1 => Just(Ws::Huge),
    ];
    (
        0..launchers,
        dtype,
        aux,
        prop::array::uniform8(size()),
        prop::array::uniform5(scalar()),
        prop::array::uniform4(int()),
        prop::array::uniform24(ptr()),
        ws,
        prop_oneof![3 => 0u8..2, 1 => 2u8..4],
    )
        .prop_map(|(launcher, dtype, aux_dtype, sizes, scalars, ints, ptrs, ws, fill)| Case {
            launcher,
            dtype,
            aux_dtype,
            sizes,
            scalars,
            ints,
            ptrs,
            ws,
            fill,
        })
}

// ---------------------------------------------------------------------------------------------
// The model of one call
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    In,
    Out,
    /// Scratch (a workspace): may change on success, never on an error.
    Work,
}

/// One buffer of a call, as the contract describes it.
struct Buf {
    name: &'static str,
    role: Role,
    /// Element size: a pointer must be aligned to it.
    elem: u64,
    /// Alignment the header documents beyond the element's (attention's 16-byte q, k, v);
    /// `strict`: a violation is an error; otherwise the launcher may or may not need it.
    align: u64,
    strict: bool,
    /// Elements the contract says it has (None: the count overflows or a size is negative).
    count: Option<u64>,
    /// May be NULL whatever its count (an optional tensor, a gradient to skip).
    optional: bool,
    /// Its contents: None = the fill pattern.
    data: Option<Vec<u8>>,
    /// Points into another buffer at a byte offset (a packed GLU half), no allocation of its own.
    view: Option<(usize, u64)>,
    /// The input the header lets this output alias (y == x, dx == dy, da == a).
    alias: Option<usize>,
    /// Never NULL, misaligned or aliased (plan tables: the caller's to get right).
    fixed: bool,
    /// Not an argument of this call at all (the case passes NULL without it being a choice).
    absent: bool,
}

struct Ctx<'a> {
    case: &'a Case,
    bufs: Vec<Buf>,
    violations: Vec<(u32, String)>,
    unsure: Vec<String>,
    /// The contract says nothing runs (n == 0): pointers, values and workspace are not checked
    /// (launchers differ on whether they look), so their violations are only "unsure".
    empty: bool,
    /// The arguments cannot be backed by valid data (the harness skips unless invalid anyway).
    unsatisfiable: Option<String>,
}

/// A size that is small (0..200 in the strategy) maps into the launcher's range; a negative or
/// huge one passes as it is.
fn small(v: i64) -> Option<i64> {
    (0..1000).contains(&v).then_some(v)
}

fn prod(xs: &[i64]) -> Option<i64> {
    xs.iter().try_fold(1i64, |a, &x| if x < 0 { None } else { a.checked_mul(x) })
}

fn bytes_of<T: Copy>(values: &[T]) -> Vec<u8> {
    // SAFETY: plain integers and floats, read as their bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)).to_vec() }
}

impl Ctx<'_> {
    fn size(&self, i: usize) -> i64 {
        self.case.sizes[i]
    }

    /// Size `i`, mapped into a launcher's range by `f` when small.
    fn sz(&self, i: usize, f: impl Fn(i64) -> i64) -> i64 {
        small(self.size(i)).map_or(self.size(i), f)
    }

    fn dtype(&self) -> kiln_dtype {
        kiln_dtype(self.case.dtype)
    }

    /// The storage element size, after checking the dtype against the family's.
    fn storage(&mut self, valid: &[u32]) -> u64 {
        let d = self.case.dtype;
        if !valid.contains(&d) {
            self.invalid(DTYPE, format!("dtype {d}"));
        }
        match d {
            F64 => 8,
            F32 => 4,
            _ => 2,
        }
    }

    fn invalid(&mut self, code: u32, why: impl Into<String>) {
        self.violations.push((code, why.into()));
    }

    fn unsure(&mut self, why: impl Into<String>) {
        self.unsure.push(why.into());
    }

    fn buf(&mut self, name: &'static str, role: Role, elem: u64, count: Option<i64>, optional: bool) -> usize {
        self.bufs.push(Buf {
            name,
            role,
            elem,
            align: elem,
            strict: true,
            count: count.and_then(|c| u64::try_from(c).ok()),
            optional,
            data: None,
            view: None,
            alias: None,
            fixed: false,
            absent: false,
        });
        self.bufs.len() - 1
    }
    fn input(&mut self, name: &'static str, elem: u64, count: Option<i64>) -> usize {
        self.buf(name, Role::In, elem, count, false)
    }
    fn opt_input(&mut self, name: &'static str, elem: u64, count: Option<i64>) -> usize {
        self.buf(name, Role::In, elem, count, true)
    }
    fn output(&mut self, name: &'static str, elem: u64, count: Option<i64>) -> usize {
        self.buf(name, Role::Out, elem, count, false)
    }
    fn opt_output(&mut self, name: &'static str, elem: u64, count: Option<i64>) -> usize {
        self.buf(name, Role::Out, elem, count, true)
    }
    /// A fixed input with these contents (index data the caller must get right, plan tables).
    fn data_input<T: Copy>(&mut self, name: &'static str, values: &[T], optional: bool) -> usize {
        let s = self.buf(name, Role::In, std::mem::size_of::<T>() as u64, Some(values.len() as i64), optional);
        self.bufs[s].data = Some(bytes_of(values));
        s
    }

    fn mode(&self, slot: usize) -> Ptr {
        let b = &self.bufs[slot];
        match self.case.ptrs[slot] {
            _ if b.absent => Ptr::Null,
            _ if b.fixed => Ptr::Real,
            Ptr::Alias if b.alias.is_none() => Ptr::Real,
            // A view lies inside its parent's allocation (which the parent's own offset moves
            // with it): only a misaligning offset of the view itself means something, and an
            // aligned one would move the view past the parent's end (a harness error, not a
            // caller's: the glu packed layouts' second half read 2 bytes past its buffer).
            Ptr::Offset(k) if b.view.is_some() && u64::from(k) % b.elem == 0 => Ptr::Real,
            m => m,
        }
    }
    fn is_null(&self, slot: usize) -> bool {
        self.mode(slot) == Ptr::Null
    }
    fn allow_alias(&mut self, out: usize, input: usize) {
        self.bufs[out].alias = Some(input);
    }
    fn set_align(&mut self, slot: usize, align: u64, strict: bool) {
        self.bufs[slot].align = align;
        self.bufs[slot].strict = strict;
    }
    fn set_data(&mut self, slot: usize, data: Vec<u8>) {
        self.bufs[slot].data = Some(data);
    }
    fn set_view(&mut self, slot: usize, of: usize, offset: u64) {
        self.bufs[slot].view = Some((of, offset));
    }
    /// A NULL pointer here breaks the contract when `cond` holds, whatever the count.
    fn require_if(&mut self, slot: usize, cond: bool) {
        if cond && self.is_null(slot) {
            self.invalid(NULL, format!("{} is NULL", self.bufs[slot].name));
        }
    }

    /// The workspace: a buffer of the query's size, and the byte count passed (per the case).
    /// `needed`: the call uses it (a gradient is requested, or always); `exact`: the query is
    /// this dtype's need (otherwise it may be more, a bound over dtypes, so a smaller claim is
    /// only "unsure"). A needed workspace must not be NULL when it has bytes, and also when it
    /// has none if `per_request` (kiln.h: a requested gradient needs a workspace).
    fn workspace(&mut self, query: i64, needed: bool, exact: bool, per_request: bool) -> (usize, i64) {
        let slot = self.buf("workspace", Role::Work, 1, Some(query.max(0)), !needed);
        // The launchers keep f32 partial sums there; kiln.h states an alignment only for
        // attention's (16 bytes, set by its builder).
        self.set_align(slot, 4, false);
        let q = query.max(0);
        let passed = match self.case.ws {
            Ws::Exact => q,
            Ws::Less(k) => q - i64::from(k),
            Ws::Zero => 0,
            Ws::Negative => -1 - q,
            Ws::Huge => i64::MAX,
        };
        if needed && q > 0 && !self.is_null(slot) && passed < q {
            if exact {
                self.invalid(WORKSPACE, format!("workspace_bytes {passed} < {q}"));
            } else {
                self.unsure(format!("workspace_bytes {passed} < the query's {q}"));
            }
        }
        if needed && (q > 0 || per_request) {
            self.require_if(slot, true);
        }
        if passed < 0 && !(needed && q > 0) {
            // A negative byte count with nothing needed: some launchers compare it anyway.
            self.unsure(format!("workspace_bytes {passed}"));
        }
        (slot, passed)
    }

    /// This buffer is not passed (NULL) by the case's choice of arguments.
    fn absent(&mut self, slot: usize) {
        self.bufs[slot].absent = true;
    }

    /// The contract's verdict on pointers: NULL where not allowed, misaligned.
    fn check_pointers(&mut self) {
        for i in 0..self.bufs.len() {
            let b = &self.bufs[i];
            if b.absent {
                continue;
            }
            let (name, elem, align, strict, count, optional) = (b.name, b.elem, b.align, b.strict, b.count, b.optional);
            match self.mode(i) {
                Ptr::Null if !optional && count != Some(0) => self.invalid(NULL, format!("{name} is NULL")),
                Ptr::Offset(k) if u64::from(k) % elem != 0 => self.invalid(MISALIGNED, format!("{name} + {k} bytes")),
                Ptr::Offset(k) if u64::from(k) % align != 0 => {
                    if strict {
                        self.invalid(MISALIGNED, format!("{name} + {k} bytes (needs {align})"));
                    } else {
                        self.unsure(format!("{name} + {k} bytes (may need {align})"));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A call made with the buffers' pointers.
type Call = Box<dyn Fn(&Ptrs) -> kiln_status>;

/// The pointers of a call's buffers, by slot.
struct Ptrs(Vec<*mut c_void>);

impl Ptrs {
    fn r<T>(&self, slot: usize) -> *const T {
        self.0[slot].cast::<T>().cast_const()
    }
    fn w<T>(&self, slot: usize) -> *mut T {
        self.0[slot].cast::<T>()
    }
}

/// One launcher: its name and its builder (model + call).
struct Launcher {
    name: &'static str,
    build: Box<dyn Fn(&mut Ctx) -> Call>,
}

fn launcher(name: &'static str, build: impl Fn(&mut Ctx) -> Call + 'static) -> Launcher {
    Launcher { name, build: Box::new(build) }
}

// ---------------------------------------------------------------------------------------------
// The launchers, family by family
// ---------------------------------------------------------------------------------------------

type UnaryFwd = unsafe extern "C" fn(kiln_dtype, *const c_void, *mut c_void, i64, *mut c_void) -> kiln_status;
type UnaryBwd =
    unsafe extern "C" fn(kiln_dtype, *const c_void, *const c_void, *mut c_void, i64, *mut c_void) -> kiln_status;
type ScalarFwd = unsafe extern "C" fn(kiln_dtype, *const c_void, *mut c_void, i64, f32, *mut c_void) -> kiln_status;
type ScalarBwd =
    unsafe extern "C" fn(kiln_dtype, *const c_void, *const c_void, *mut c_void, i64, f32, *mut c_void) -> kiln_status;
type ExpandedBwd = unsafe extern "C" fn(
    kiln_dtype,
    *const c_void,
    *const c_void,
    *mut c_void,
    i64,
    f32,
    *mut f32,
    *mut c_void,
    i64,
    *mut c_void,
) -> kiln_status;
type ChannelFwd =
    unsafe extern "C" fn(kiln_dtype, *const c_void, *mut c_void, i64, *const f32, i64, *mut c_void) -> kiln_status;

/// The activations' shared part: x [n] in, y or dx [n] out (which may alias x, or dy), and dy
/// [n] for a backward. Returns the slots (x, dy, out).
fn act_common(c: &mut Ctx, bwd: bool, n: i64) -> (usize, Option<usize>, usize) {
    let e = c.storage(FLOATS);
    if n < 0 {
        c.invalid(SIZE, format!("n = {n}"));
    }
    c.empty = n == 0;
    let x = c.input("x", e, Some(n));
    let dy = bwd.then(|| c.input("dy", e, Some(n)));
    let out = c.output(if bwd { "dx" } else { "y" }, e, Some(n));
    // kiln.h: y == x, dx == x or dx == dy; which input, the case's first int says.
    let partner = match dy {
        Some(dy) if c.case.ints[3] % 2 == 1 => dy,
        _ => x,
    };
    c.allow_alias(out, partner);
    (x, dy, out)
}

/// A finite α with 1 + 2α a finite float (xATLU, xGELU, xSiLU, the expanded GLUs).
fn alpha_ok(alpha: f32) -> bool {
    alpha.is_finite() && ((1.0 + 2.0 * f64::from(alpha)) as f32).is_finite()
}

/// A positive, normal, finite float (SmeLU's β, JumpReLU's ε).
fn positive_normal(v: f32) -> bool {
    v.is_finite() && v >= f32::MIN_POSITIVE
}

/// Generalized SmeLU's scalars, as kiln.h states the rule.
fn gsmelu_ok(s: [f32; 5]) -> bool {
    let [a, b, gn, gp, t] = s;
    let zero_or_normal = |v: f32| v == 0.0 || v.is_normal();
    let width = (f64::from(a) + f64::from(b)) as f32;
    let quad = (f64::from(gp) - f64::from(gn)) / (2.0 * f64::from(width));
    let right =
        f64::from(t) + f64::from(width) * f64::from(gn) / 2.0 + (f64::from(a) - f64::from(b)) * f64::from(gp) / 2.0;
    s.iter().all(|v| v.is_finite())
        && zero_or_normal(a)
        && zero_or_normal(b)
        && width > 0.0
        && width.is_normal()
        && (quad as f32).is_finite()
        && (right as f32).is_finite()
}

fn activation_launchers() -> Vec<Launcher> {
    let mut v = Vec::new();
    let plain: [(&str, UnaryFwd, UnaryBwd); 8] = [
        ("relu", ffi::kiln_activation_relu_fwd, ffi::kiln_activation_relu_bwd),
        ("gelu", ffi::kiln_activation_gelu_fwd, ffi::kiln_activation_gelu_bwd),
        ("gelu_tanh", ffi::kiln_activation_gelu_tanh_fwd, ffi::kiln_activation_gelu_tanh_bwd),
        ("quick_gelu", ffi::kiln_activation_quick_gelu_fwd, ffi::kiln_activation_quick_gelu_bwd),
        ("silu", ffi::kiln_activation_silu_fwd, ffi::kiln_activation_silu_bwd),
        ("sigmoid", ffi::kiln_activation_sigmoid_fwd, ffi::kiln_activation_sigmoid_bwd),
        ("squared_relu", ffi::kiln_activation_squared_relu_fwd, ffi::kiln_activation_squared_relu_bwd),
        ("atlu", ffi::kiln_activation_atlu_fwd, ffi::kiln_activation_atlu_bwd),
    ];
    for (name, fwd, bwd) in plain {
        v.push(launcher(Box::leak(format!("activation_{name}_fwd").into_boxed_str()), move |c| {
            let n = c.size(0);
            let (x, _, y) = act_common(c, false, n);
            let d = c.dtype();
            Box::new(move |p| unsafe { fwd(d, p.r(x), p.w(y), n, null_mut()) })
        }));
        v.push(launcher(Box::leak(format!("activation_{name}_bwd").into_boxed_str()), move |c| {
            let n = c.size(0);
            let (x, dy, dx) = act_common(c, true, n);
            let dy = dy.expect("a backward has dy");
            let d = c.dtype();
            Box::new(move |p| unsafe { bwd(d, p.r(x), p.r(dy), p.w(dx), n, null_mut()) })
        }));
    }
    let expanded: [(&str, ScalarFwd, ExpandedBwd); 3] = [
        ("xatlu", ffi::kiln_activation_xatlu_fwd, ffi::kiln_activation_xatlu_bwd),
        ("xgelu", ffi::kiln_activation_xgelu_fwd, ffi::kiln_activation_xgelu_bwd),
        ("xsilu", ffi::kiln_activation_xsilu_fwd, ffi::kiln_activation_xsilu_bwd),
    ];
    for (name, fwd, bwd) in expanded {
        v.push(launcher(Box::leak(format!("activation_{name}_fwd").into_boxed_str()), move |c| {
            let (n, alpha) = (c.size(0), c.case.scalars[0]);
            let (x, _, y) = act_common(c, false, n);
            if !alpha_ok(alpha) {
                c.invalid(VALUE, format!("alpha {alpha}"));
            }
            let d = c.dtype();
            Box::new(move |p| unsafe { fwd(d, p.r(x), p.w(y), n, alpha, null_mut()) })
        }));
        v.push(launcher(Box::leak(format!("activation_{name}_bwd").into_boxed_str()), move |c| {
            let (n, alpha) = (c.size(0), c.case.scalars[0]);
            let (x, dy, dx) = act_common(c, true, n);
            let dy = dy.expect("a backward has dy");
            if !alpha_ok(alpha) {
                c.invalid(VALUE, format!("alpha {alpha}"));
            }
            let dalpha = c.opt_output("dalpha", 4, Some(1));
            // SAFETY: a pure size query.
            let query = unsafe { ffi::kiln_activation_workspace_bytes(n, 1) };
            let (ws, ws_bytes) = c.workspace(query, !c.is_null(dalpha), false, true);
            let d = c.dtype();
            Box::new(move |p| unsafe {
                bwd(d, p.r(x), p.r(dy), p.w(dx), n, alpha, p.w(dalpha), p.w(ws), ws_bytes, null_mut())
            })
        }));
    }
    v.push(launcher("activation_smelu_fwd", |c| {
        let (n, beta) = (c.size(0), c.case.scalars[1]);
        let (x, _, y) = act_common(c, false, n);
        if !positive_normal(beta) {
            c.invalid(VALUE, format!("beta {beta}"));
        }
        let d = c.dtype();
        let f: ScalarFwd = ffi::kiln_activation_smelu_fwd;
        Box::new(move |p| unsafe { f(d, p.r(x), p.w(y), n, beta, null_mut()) })
    }));
    v.push(launcher("activation_smelu_bwd", |c| {
        let (n, beta) = (c.size(0), c.case.scalars[1]);
        let (x, dy, dx) = act_common(c, true, n);
        let dy = dy.expect("a backward has dy");
        if !positive_normal(beta) {
            c.invalid(VALUE, format!("beta {beta}"));
        }
        let d = c.dtype();
        let f: ScalarBwd = ffi::kiln_activation_smelu_bwd;
        Box::new(move |p| unsafe { f(d, p.r(x), p.r(dy), p.w(dx), n, beta, null_mut()) })
    }));
    v.push(launcher("activation_gsmelu_fwd", |c| {
        let (n, s) = (c.size(0), c.case.scalars);
        let (x, _, y) = act_common(c, false, n);
        if !gsmelu_ok(s) {
            c.invalid(VALUE, format!("scalars {s:?}"));
        }
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_activation_gsmelu_fwd(d, p.r(x), p.w(y), n, s[0], s[1], s[2], s[3], s[4], null_mut())
        })
    }));
    v.push(launcher("activation_gsmelu_bwd", |c| {
        let (n, s) = (c.size(0), c.case.scalars);
        let (x, dy, dx) = act_common(c, true, n);
        let dy = dy.expect("a backward has dy");
        if !gsmelu_ok(s) {
            c.invalid(VALUE, format!("scalars {s:?}"));
        }
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_activation_gsmelu_bwd(d, p.r(x), p.r(dy), p.w(dx), n, s[0], s[1], s[2], s[3], s[4], null_mut())
        })
    }));
    // PReLU and JumpReLU: a parameter per channel; n is rows × channels (or, now and then, not).
    let channel_sizes = |c: &mut Ctx| {
        let channels = c.sz(1, |s| if s % 16 == 15 { 0 } else { 1 + s % 8 });
        let n = c.sz(0, |s| if s % 8 == 7 || channels <= 0 { s } else { channels.saturating_mul(s / 8) });
        (n, channels)
    };
    let channel_rules = |c: &mut Ctx, n: i64, channels: i64| {
        if channels < 1 || (n >= 0 && n % channels != 0) {
            // n == 0 with a bad channel count: the contract says nothing runs.
            if n == 0 {
                c.unsure(format!("n = 0, channels = {channels}"));
            } else {
                c.invalid(SIZE, format!("n = {n}, channels = {channels}"));
            }
        } else if channels > 1 << 31 {
            c.unsure(format!("channels {channels}: a grid limit kiln.h does not state"));
        }
    };
    let channel_fwd: [(&str, ChannelFwd); 2] =
        [("prelu", ffi::kiln_activation_prelu_fwd), ("jumprelu", ffi::kiln_activation_jumprelu_fwd)];
    for (name, fwd) in channel_fwd {
        v.push(launcher(Box::leak(format!("activation_{name}_fwd").into_boxed_str()), move |c| {
            let (n, channels) = channel_sizes(c);
            let (x, _, y) = act_common(c, false, n);
            channel_rules(c, n, channels);
            let param = c.input("param", 4, Some(channels));
            // The parameter is needed whatever the channel count says.
            c.require_if(param, true);
            let d = c.dtype();
            Box::new(move |p| unsafe { fwd(d, p.r(x), p.w(y), n, p.r(param), channels, null_mut()) })
        }));
    }
    v.push(launcher("activation_prelu_bwd", move |c| {
        let (n, channels) = channel_sizes(c);
        let (x, dy, dx) = act_common(c, true, n);
        let dy = dy.expect("a backward has dy");
        channel_rules(c, n, channels);
        let slope = c.input("slope", 4, Some(channels));
        c.require_if(slope, true);
        let dslope = c.opt_output("dslope", 4, Some(channels));
        // SAFETY: a pure size query.
        let query = unsafe { ffi::kiln_activation_workspace_bytes(n, channels) };
        let (ws, ws_bytes) = c.workspace(query, !c.is_null(dslope), false, true);
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_activation_prelu_bwd(
                d,
                p.r(x),
                p.r(dy),
                p.w(dx),
                n,
                p.r(slope),
                channels,
                p.w(dslope),
                p.w(ws),
                ws_bytes,
                null_mut(),
            )
        })
    }));
    v.push(launcher("activation_jumprelu_bwd", move |c| {
        let (n, channels) = channel_sizes(c);
        let eps = c.case.scalars[2];
        let (x, dy, dx) = act_common(c, true, n);
        let dy = dy.expect("a backward has dy");
        channel_rules(c, n, channels);
        if !positive_normal(eps) {
            c.invalid(VALUE, format!("eps {eps}"));
        }
        let theta = c.input("theta", 4, Some(channels));
        c.require_if(theta, true);
        let dtheta = c.opt_output("dtheta", 4, Some(channels));
        // SAFETY: a pure size query.
        let query = unsafe { ffi::kiln_activation_workspace_bytes(n, channels) };
        let (ws, ws_bytes) = c.workspace(query, !c.is_null(dtheta), false, true);
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_activation_jumprelu_bwd(
                d,
                p.r(x),
                p.r(dy),
                p.w(dx),
                n,
                p.r(theta),
                channels,
                eps,
                p.w(dtheta),
                p.w(ws),
                ws_bytes,
                null_mut(),
            )
        })
    }));
    v
}

/// GLU views: a and b [rows, F] with row stride `stride`, separate or packed in one buffer (gate
/// first or second, kiln.h's layouts). Returns (rows, F, stride, a, b).
fn glu_inputs(c: &mut Ctx, e: u64) -> (i64, i64, i64, usize, usize) {
    let rows = c.sz(0, |s| s % 12);
    let f = c.sz(1, |s| if s % 23 == 22 { 0 } else { 1 + s % 40 });
    let stride = c.sz(2, |s| match s % 8 {
        4 => f.saturating_add(1),
        5 => f.saturating_add(8),
        6 => f.saturating_mul(2),
        7 => f.saturating_sub(1),
        _ => f,
    });
    if rows < 0 || f < 1 || stride < f {
        c.invalid(SIZE, format!("rows {rows}, F {f}, ab_stride {stride}"));
    }
    glu_overflow(c, rows, stride, e);
    c.empty = rows == 0;
    let extent = view_extent(rows, stride, f);
    // Packed layouts need room for both halves in a row: stride >= 2F.
    let packable = f >= 1 && f.checked_mul(2).is_some_and(|two_f| stride >= two_f);
    let layout = if packable { c.case.ints[2].rem_euclid(3) } else { 0 };
    let (a, b) = match layout {
        0 => (c.input("a", e, extent), c.input("b", e, extent)),
        first => {
            let ab = c.input("ab", e, extent.and_then(|n| n.checked_add(f)));
            let half = c.input("ab+F", e, extent);
            c.set_view(half, ab, (f as u64).saturating_mul(e));
            if first == 1 { (ab, half) } else { (half, ab) }
        }
    };
    (rows, f, stride, a, b)
}

/// Elements a [rows, F] view with row stride `stride` spans: (rows - 1)·stride + F.
fn view_extent(rows: i64, stride: i64, f: i64) -> Option<i64> {
    if rows == 0 {
        return Some(0);
    }
    if rows < 0 || f < 0 {
        return None;
    }
    (rows - 1).checked_mul(stride)?.checked_add(f)
}

/// A view whose last element's byte offset overflows 64 bits cannot exist: an argument error.
/// The launchers also refuse rows·stride past INT64_MAX / 4 elements, a limit kiln.h does not
/// state (a stride of 2^61 with one row is a valid view by the header): "unsure" there.
fn glu_overflow(c: &mut Ctx, rows: i64, stride: i64, e: u64) {
    if rows <= 0 || stride <= 0 {
        return;
    }
    match view_extent(rows, stride, 1).and_then(|n| n.checked_mul(e as i64)) {
        None => c.invalid(SIZE, format!("rows {rows} × stride {stride} overflows")),
        Some(_) if prod(&[rows, stride, 16]).is_none() => {
            c.unsure(format!("rows {rows} × stride {stride} past the launcher's element limit"))
        }
        Some(_) => {}
    }
}

/// The GLU backward's outputs da, db (row stride dab_stride, or a's stride when in place).
fn glu_grads(c: &mut Ctx, e: u64, rows: i64, f: i64, stride: i64, a: usize, b: usize) -> (i64, usize, usize) {
    let in_place = c.case.ptrs[c.bufs.len()] == Ptr::Alias && c.bufs[a].view.is_none() && c.bufs[b].view.is_none();
    let dab = if in_place {
        stride
    } else {
        c.sz(3, |s| match s % 6 {
            4 => f.saturating_add(3),
            5 => f.saturating_sub(1),
            _ => f,
        })
    };
    if dab < f {
        c.invalid(SIZE, format!("dab_stride {dab} < F {f}"));
    }
    glu_overflow(c, rows, dab, e);
    let extent = view_extent(rows, dab, f);
    let da = c.output("da", e, extent);
    let db = c.output("db", e, extent);
    if in_place {
        // kiln.h: da may equal a and db equal b (same stride).
        c.allow_alias(da, a);
        c.allow_alias(db, b);
    }
    (dab, da, db)
}

/// The GLU gate order from the case: mostly 1 or 2, sometimes 0, 3 or a raw value.
fn glu_order(c: &Ctx) -> i32 {
    match c.case.ints[0] {
        0 | 2 | 4 => 1,
        1 | 3 => 2,
        5 => 0,
        o => o,
    }
}

fn order_ok(c: &mut Ctx, order: i32) {
    if order != 1 && order != 2 {
        c.invalid(VALUE, format!("order {order}"));
    }
}

type GluFwd = unsafe extern "C" fn(
    kiln_dtype,
    *const c_void,
    *const c_void,
    i64,
    *mut c_void,
    i64,
    i64,
    *mut c_void,
) -> kiln_status;
type GluBwd = unsafe extern "C" fn(
    kiln_dtype,
    *const c_void,
    *const c_void,
    i64,
    *const c_void,
    *mut c_void,
    *mut c_void,
    i64,
    i64,
    i64,
    *mut c_void,
) -> kiln_status;
type GluXFwd = unsafe extern "C" fn(
    kiln_dtype,
    *const c_void,
    *const c_void,
    i64,
    *mut c_void,
    i64,
    i64,
    f32,
    i32,
    *mut c_void,
) -> kiln_status;
type GluXBwd = unsafe extern "C" fn(
    kiln_dtype,
    *const c_void,
    *const c_void,
    i64,
    *const c_void,
    *mut c_void,
    *mut c_void,
    i64,
    i64,
    i64,
    f32,
    i32,
    *mut f32,
    *mut c_void,
    i64,
    *mut c_void,
) -> kiln_status;

fn glu_launchers() -> Vec<Launcher> {
    let mut v = Vec::new();
    let plain: [(&str, GluFwd, GluBwd); 6] = [
        ("glu", ffi::kiln_glu_glu_fwd, ffi::kiln_glu_glu_bwd),
        ("bilinear", ffi::kiln_glu_bilinear_fwd, ffi::kiln_glu_bilinear_bwd),
        ("reglu", ffi::kiln_glu_reglu_fwd, ffi::kiln_glu_reglu_bwd),
        ("geglu", ffi::kiln_glu_geglu_fwd, ffi::kiln_glu_geglu_bwd),
        ("geglu_tanh", ffi::kiln_glu_geglu_tanh_fwd, ffi::kiln_glu_geglu_tanh_bwd),
        ("swiglu", ffi::kiln_glu_swiglu_fwd, ffi::kiln_glu_swiglu_bwd),
    ];
    for (name, fwd, bwd) in plain {
        v.push(launcher(Box::leak(format!("glu_{name}_fwd").into_boxed_str()), move |c| {
            let e = c.storage(FLOATS);
            let (rows, f, stride, a, b) = glu_inputs(c, e);
            let y = c.output("y", e, prod(&[rows, f]));
            let d = c.dtype();
            Box::new(move |p| unsafe { fwd(d, p.r(a), p.r(b), stride, p.w(y), rows, f, null_mut()) })
        }));
        v.push(launcher(Box::leak(format!("glu_{name}_bwd").into_boxed_str()), move |c| {
            let e = c.storage(FLOATS);
            let (rows, f, stride, a, b) = glu_inputs(c, e);
            let dy = c.input("dy", e, prod(&[rows, f]));
            let (dab, da, db) = glu_grads(c, e, rows, f, stride, a, b);
            let d = c.dtype();
            Box::new(move |p| unsafe {
                bwd(d, p.r(a), p.r(b), stride, p.r(dy), p.w(da), p.w(db), dab, rows, f, null_mut())
            })
        }));
    }
    v.push(launcher("glu_atglu_fwd", |c| {
        let e = c.storage(FLOATS);
        let (rows, f, stride, a, b) = glu_inputs(c, e);
        let order = glu_order(c);
        order_ok(c, order);
        let y = c.output("y", e, prod(&[rows, f]));
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_glu_atglu_fwd(d, p.r(a), p.r(b), stride, p.w(y), rows, f, order, null_mut())
        })
    }));
    v.push(launcher("glu_atglu_bwd", |c| {
        let e = c.storage(FLOATS);
        let (rows, f, stride, a, b) = glu_inputs(c, e);
        let order = glu_order(c);
        order_ok(c, order);
        let dy = c.input("dy", e, prod(&[rows, f]));
        let (dab, da, db) = glu_grads(c, e, rows, f, stride, a, b);
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_glu_atglu_bwd(
                d,
                p.r(a),
                p.r(b),
                stride,
                p.r(dy),
                p.w(da),
                p.w(db),
                dab,
                rows,
                f,
                order,
                null_mut(),
            )
        })
    }));
    let expanded: [(&str, GluXFwd, GluXBwd); 3] = [
        ("xatglu", ffi::kiln_glu_xatglu_fwd, ffi::kiln_glu_xatglu_bwd),
        ("xgeglu", ffi::kiln_glu_xgeglu_fwd, ffi::kiln_glu_xgeglu_bwd),
        ("xswiglu", ffi::kiln_glu_xswiglu_fwd, ffi::kiln_glu_xswiglu_bwd),
    ];
    for (name, fwd, bwd) in expanded {
        v.push(launcher(Box::leak(format!("glu_{name}_fwd").into_boxed_str()), move |c| {
            let e = c.storage(FLOATS);
            let (rows, f, stride, a, b) = glu_inputs(c, e);
            let (alpha, order) = (c.case.scalars[0], glu_order(c));
            order_ok(c, order);
            if !alpha_ok(alpha) {
                c.invalid(VALUE, format!("alpha {alpha}"));
            }
            let y = c.output("y", e, prod(&[rows, f]));
            let d = c.dtype();
            Box::new(move |p| unsafe { fwd(d, p.r(a), p.r(b), stride, p.w(y), rows, f, alpha, order, null_mut()) })
        }));
        v.push(launcher(Box::leak(format!("glu_{name}_bwd").into_boxed_str()), move |c| {
            let e = c.storage(FLOATS);
            let (rows, f, stride, a, b) = glu_inputs(c, e);
            let (alpha, order) = (c.case.scalars[0], glu_order(c));
            order_ok(c, order);
            if !alpha_ok(alpha) {
                c.invalid(VALUE, format!("alpha {alpha}"));
            }
            let dy = c.input("dy", e, prod(&[rows, f]));
            let (dab, da, db) = glu_grads(c, e, rows, f, stride, a, b);
            let dalpha = c.opt_output("dalpha", 4, Some(1));
            // SAFETY: a pure size query.
            let query = unsafe { ffi::kiln_glu_workspace_bytes(rows, f) };
            let (ws, ws_bytes) = c.workspace(query, !c.is_null(dalpha), false, true);
            let d = c.dtype();
            Box::new(move |p| unsafe {
                bwd(
                    d,
                    p.r(a),
                    p.r(b),
                    stride,
                    p.r(dy),
                    p.w(da),
                    p.w(db),
                    dab,
                    rows,
                    f,
                    alpha,
                    order,
                    p.w(dalpha),
                    p.w(ws),
                    ws_bytes,
                    null_mut(),
                )
            })
        }));
    }
    v
}

/// Norm sizes: rows, dim (1 <= dim <= 65536 documented).
fn norm_sizes(c: &mut Ctx) -> (i64, i64) {
    let rows = c.sz(0, |s| s % 10);
    let dims = [1i64, 2, 3, 7, 8, 16, 31, 64, 100, 256, 1000, 1024, 2048, 4097, 65536, 65537, 0];
    let dim = c.sz(1, |s| dims[s as usize % dims.len()]);
    if rows < 0 || !(1..=65536).contains(&dim) {
        c.invalid(SIZE, format!("rows {rows}, dim {dim}"));
    } else if prod(&[rows, dim]).is_none_or(|n| n > 1 << 50) {
        c.unsure(format!("rows {rows} × dim {dim}: past the launcher's element limit (2^50, undocumented)"));
    }
    c.empty = rows == 0;
    (rows, dim)
}

fn norm_launchers() -> Vec<Launcher> {
    let mut v = Vec::new();
    for layer in [true, false] {
        let name = if layer { "norm_layernorm_fwd" } else { "norm_rmsnorm_fwd" };
        v.push(launcher(name, move |c| {
            let e = c.storage(FLOATS);
            let (rows, dim) = norm_sizes(c);
            let eps = c.case.scalars[1];
            if !(eps.is_finite() && eps > 0.0) {
                c.invalid(VALUE, format!("eps {eps}"));
            }
            let n = prod(&[rows, dim]);
            let x = c.input("x", e, n);
            let residual = c.opt_input("residual", e, n);
            let gamma = c.opt_input("gamma", 4, Some(dim));
            let beta = c.opt_input("beta", 4, Some(dim));
            let y = c.output("y", e, n);
            let residual_out = c.opt_output("residual_out", e, n);
            let mean = layer.then(|| c.opt_output("mean", 4, Some(rows)));
            let rstd = c.opt_output("rstd", 4, Some(rows));
            let d = c.dtype();
            Box::new(move |p| unsafe {
                match mean {
                    Some(mean) => ffi::kiln_norm_layernorm_fwd(
                        d,
                        p.r(x),
                        p.r(residual),
                        p.r(gamma),
                        p.r(beta),
                        rows,
                        dim,
                        eps,
                        p.w(y),
                        p.w(residual_out),
                        p.w(mean),
                        p.w(rstd),
                        null_mut(),
                    ),
                    None => ffi::kiln_norm_rmsnorm_fwd(
                        d,
                        p.r(x),
                        p.r(residual),
                        p.r(gamma),
                        p.r(beta),
                        rows,
                        dim,
                        eps,
                        p.w(y),
                        p.w(residual_out),
                        p.w(rstd),
                        null_mut(),
                    ),
                }
            })
        }));
        let name = if layer { "norm_layernorm_bwd" } else { "norm_rmsnorm_bwd" };
        v.push(launcher(name, move |c| {
            let e = c.storage(FLOATS);
            let (rows, dim) = norm_sizes(c);
            let n = prod(&[rows, dim]);
            let dy = c.input("dy", e, n);
            let x = c.input("x", e, n);
            let residual = c.opt_input("residual", e, n);
            let mean = layer.then(|| c.input("mean", 4, Some(rows)));
            let rstd = c.input("rstd", 4, Some(rows));
            let gamma = c.opt_input("gamma", 4, Some(dim));
            let dresidual_out = c.opt_input("dresidual_out", e, n);
            let dx = c.output("dx", e, n);
            let dresidual = c.opt_output("dresidual", e, n);
            let dgamma = c.opt_output("dgamma", 4, Some(dim));
            let dbeta = c.opt_output("dbeta", 4, Some(dim));
            // SAFETY: a pure size query.
            let query = unsafe { ffi::kiln_norm_workspace_bytes(rows, dim) };
            let grads = !c.is_null(dgamma) || !c.is_null(dbeta);
            let (ws, ws_bytes) = c.workspace(query, grads, true, true);
            let d = c.dtype();
            Box::new(move |p| unsafe {
                match mean {
                    Some(mean) => ffi::kiln_norm_layernorm_bwd(
                        d,
                        p.r(dy),
                        p.r(x),
                        p.r(residual),
                        p.r(mean),
                        p.r(rstd),
                        p.r(gamma),
                        p.r(dresidual_out),
                        rows,
                        dim,
                        p.w(dx),
                        p.w(dresidual),
                        p.w(dgamma),
                        p.w(dbeta),
                        p.w(ws),
                        ws_bytes,
                        null_mut(),
                    ),
                    None => ffi::kiln_norm_rmsnorm_bwd(
                        d,
                        p.r(dy),
                        p.r(x),
                        p.r(residual),
                        p.r(rstd),
                        p.r(gamma),
                        p.r(dresidual_out),
                        rows,
                        dim,
                        p.w(dx),
                        p.w(dresidual),
                        p.w(dgamma),
                        p.w(dbeta),
                        p.w(ws),
                        ws_bytes,
                        null_mut(),
                    ),
                }
            })
        }));
    }
    v
}

/// Padding sizes: batch, seqlen, dim, capacity, with kiln.h's rules (batch·seqlen < 2^31).
fn padding_sizes(c: &mut Ctx) -> (i64, i64, i64, i64) {
    let batch = c.sz(0, |s| s % 5);
    let seqlen = c.sz(1, |s| s % 12);
    let dim = c.sz(2, |s| if s % 13 == 12 { 0 } else { 1 + s % 20 });
    let capacity = c.sz(3, |s| s % 40);
    let tokens = prod(&[batch, seqlen]);
    if batch < 0 || seqlen < 0 || dim < 1 || capacity < 0 || tokens.is_none_or(|t| t >= 1 << 31) {
        c.invalid(SIZE, format!("batch {batch}, seqlen {seqlen}, dim {dim}, capacity {capacity}"));
    } else {
        if capacity.max(batch).max(seqlen) > i64::from(i32::MAX) {
            c.unsure("capacity, batch or seqlen past int32 (undocumented when the product is not)");
        }
        for rows in [tokens.unwrap_or(0), capacity] {
            addressable(c, "rows × dim", &[rows, dim], 4);
        }
    }
    (batch, seqlen, dim, capacity)
}

/// A tensor of these dimensions whose bytes overflow 64 bits cannot exist: an argument error.
/// Launchers refuse a little earlier (element counts past INT64_MAX / 16 or / 4, so that vector
/// packs stay addressable); kiln.h does not say where, so that margin is only "unsure".
fn addressable(c: &mut Ctx, what: &str, dims: &[i64], elem: i64) {
    let mut with_elem = dims.to_vec();
    with_elem.push(elem);
    let mut with_pack = dims.to_vec();
    with_pack.push(16);
    if dims.contains(&0) {
        return;
    }
    if prod(&with_elem).is_none() {
        c.invalid(SIZE, format!("{what} {dims:?} overflows"));
    } else if prod(&with_pack).is_none() {
        c.unsure(format!("{what} {dims:?} near the element limit"));
    }
}

/// Token indices for pad/gather: distinct and in range (valid), zeros (duplicates), or the fill
/// pattern (out of range): the launchers check them on the device.
fn index_data(c: &Ctx, n: i64, tokens: i64) -> Option<Vec<u8>> {
    let n = usize::try_from(n).ok().filter(|&n| n <= MAX_DATA)?;
    match c.case.fill {
        0 | 1 => Some(bytes_of(&(0..n).map(|i| (i as i64 % tokens.max(1)) as i32).collect::<Vec<_>>())),
        2 => Some(vec![0; n * 4]),
        _ => None,
    }
}

fn padding_launchers() -> Vec<Launcher> {
    let mut v = Vec::new();
    v.push(launcher("padding_unpad_fwd", |c| {
        let e = c.storage(FLOATS);
        let (batch, seqlen, dim, capacity) = padding_sizes(c);
        let tokens = prod(&[batch, seqlen]);
        let hidden = c.input("hidden", e, prod(&[batch, seqlen, dim]));
        // The kept tokens: a mask, seqlens, both (an error) or neither (an error unless there
        // is no token).
        let mode = c.case.ints[1].rem_euclid(6);
        let mask_dtype = c.case.aux_dtype;
        let mask_elem = if mask_dtype == U8 { 1 } else { 4 };
        let mask = c.opt_input("mask", mask_elem, tokens);
        let seqlens = c.opt_input("seqlens", 4, Some(batch));
        let (use_mask, use_seqlens) = match mode {
            0 | 1 => (true, false),
            2 | 3 => (false, true),
            4 => (true, true),
            _ => (false, false),
        };
        if !use_mask {
            c.absent(mask);
        }
        if !use_seqlens {
            c.absent(seqlens);
        }
        let mask_given = use_mask && !c.is_null(mask);
        let seqlens_given = use_seqlens && !c.is_null(seqlens);
        if mask_given && mask_dtype != U8 && mask_dtype != I32 {
            c.invalid(DTYPE, format!("mask dtype {mask_dtype}"));
        }
        if mask_given && seqlens_given {
            c.invalid(VALUE, "both mask and seqlens");
        }
        if !mask_given && !seqlens_given && tokens != Some(0) {
            c.invalid(NULL, "neither mask nor seqlens");
        }
        if let (Some(lens), true) = (usize::try_from(batch).ok().filter(|&b| b <= MAX_DATA), c.case.fill < 2) {
            let lens: Vec<i32> =
                (0..lens).map(|b| ((b as i64 * 7) % seqlen.clamp(0, 1 << 20).saturating_add(1)) as i32).collect();
            c.set_data(seqlens, bytes_of(&lens));
        }
        // packed may be NULL: the indices only.
        let packed = c.opt_output("packed", e, prod(&[capacity, dim]));
        let indices = c.output("indices", 4, Some(capacity));
        let cu_seqlens = c.output("cu_seqlens", 4, batch.checked_add(1));
        let counts = c.output("counts", 4, Some(2));
        let status = c.output("status", 4, Some(1));
        // SAFETY: a pure size query.
        let query = unsafe { ffi::kiln_padding_workspace_bytes(batch, seqlen) };
        let (ws, ws_bytes) = c.workspace(query, true, true, false);
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_padding_unpad_fwd(
                d,
                p.r(hidden),
                kiln_dtype(mask_dtype),
                p.r(mask),
                p.r(seqlens),
                batch,
                seqlen,
                dim,
                capacity,
                p.w(packed),
                p.w(indices),
                p.w(cu_seqlens),
                p.w(counts),
                p.w(status),
                p.w(ws),
                ws_bytes,
                null_mut(),
            )
        })
    }));
    v.push(launcher("padding_pad_fwd", |c| {
        let e = c.storage(FLOATS);
        let (batch, seqlen, dim, capacity) = padding_sizes(c);
        let tokens = prod(&[batch, seqlen]);
        let packed = c.input("packed", e, prod(&[capacity, dim]));
        let indices = c.input("indices", 4, Some(capacity));
        if let Some(data) = index_data(c, capacity, tokens.unwrap_or(0)) {
            c.set_data(indices, data);
        }
        let nnz = c.opt_input("nnz", 4, Some(1));
        if c.case.fill < 2 {
            c.set_data(nnz, bytes_of(&[capacity.min(tokens.unwrap_or(0)).clamp(0, i64::from(i32::MAX)) as i32]));
        }
        let hidden = c.output("hidden", e, prod(&[batch, seqlen, dim]));
        let status = c.output("status", 4, Some(1));
        // SAFETY: a pure size query.
        let query = unsafe { ffi::kiln_padding_workspace_bytes(batch, seqlen) };
        let (ws, ws_bytes) = c.workspace(query, true, true, false);
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_padding_pad_fwd(
                d,
                p.r(packed),
                p.r(indices),
                p.r(nnz),
                capacity,
                batch,
                seqlen,
                dim,
                p.w(hidden),
                p.w(status),
                p.w(ws),
                ws_bytes,
                null_mut(),
            )
        })
    }));
    v.push(launcher("padding_gather_fwd", |c| {
        let e = c.storage(FLOATS);
        let (batch, seqlen, dim, capacity) = padding_sizes(c);
        let tokens = prod(&[batch, seqlen]);
        let hidden = c.input("hidden", e, prod(&[batch, seqlen, dim]));
        let indices = c.input("indices", 4, Some(capacity));
        if let Some(data) = index_data(c, capacity, tokens.unwrap_or(0)) {
            c.set_data(indices, data);
        }
        let nnz = c.opt_input("nnz", 4, Some(1));
        let packed = c.output("packed", e, prod(&[capacity, dim]));
        let status = c.output("status", 4, Some(1));
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_padding_gather_fwd(
                d,
                p.r(hidden),
                p.r(indices),
                p.r(nnz),
                capacity,
                batch,
                seqlen,
                dim,
                p.w(packed),
                p.w(status),
                null_mut(),
            )
        })
    }));
    v
}

/// The sizes, scalars and shared buffers (slots) of the two attention launchers.
struct Attn {
    elem: u64,
    positions_used: bool,
    prefix: usize,
    batch: i64,
    tq: i64,
    tk: i64,
    heads: i64,
    heads_k: i64,
    head_dim: i64,
    max_q: i64,
    max_k: i64,
    slopes_per_batch: i32,
    causal: i32,
    scale: f32,
    q: usize,
    k: usize,
    v: usize,
    cu_q: usize,
    cu_k: usize,
    slopes: usize,
    positions: usize,
}

/// cu_seqlens [batch + 1] splitting `total` tokens over `batch` sequences (valid), zeros, or the
/// fill pattern (inconsistent: those sequences are skipped).
fn cu_seqlens(c: &Ctx, batch: i64, total: i64) -> Option<Vec<u8>> {
    let b = usize::try_from(batch).ok().filter(|&b| b <= MAX_DATA)?;
    match c.case.fill {
        0 | 1 => {
            let total = total.clamp(0, i64::from(i32::MAX));
            Some(bytes_of(&(0..=b).map(|i| (i as i64 * total / b.max(1) as i64) as i32).collect::<Vec<_>>()))
        }
        2 => Some(vec![0; (b + 1) * 4]),
        _ => None,
    }
}

/// Head dims drawn for attention (16 and 48 are invalid); the tile-variant launcher draws from
/// the dims that have variants, so that enough of its calls are valid to fuzz the kernels.
const ATTENTION_DIMS: [i64; 10] = [32, 64, 96, 128, 32, 64, 96, 128, 16, 48];
const VARIANT_DIMS: [i64; 10] = [64, 128, 64, 128, 64, 128, 64, 128, 16, 48];

fn attention_common(c: &mut Ctx, bwd: bool) -> Attn {
    attention_with_dims(c, bwd, &ATTENTION_DIMS)
}

fn attention_with_dims(c: &mut Ctx, bwd: bool, dims: &[i64; 10]) -> Attn {
    let e = c.storage(HALVES);
    let batch = c.sz(0, |s| s % 4);
    let tq = c.sz(1, |s| s % 24);
    let heads = c.sz(3, |s| if s % 9 == 8 { 0 } else { 1 + s % 4 });
    // Attention has many sizes; the less central ones are always mapped into range (their
    // invalid values are still drawn: heads_k 0 or not dividing heads, head_dim 16 or 48).
    let heads_k = match c.size(4).rem_euclid(8) {
        0..=2 => 1,
        3..=5 => heads,
        6 => 3,
        _ => 0,
    };
    let head_dim = dims[c.size(5).rem_euclid(10) as usize];
    let positions_wanted = c.case.ints[0] % 3 == 2;
    // Geometric ALiBi needs total_q == total_k: most such cases keep it.
    let tk = if positions_wanted && c.case.ints[1] % 4 != 3 { tq } else { c.sz(2, |s| s % 24) };
    let span = |total: i64| if batch > 0 { total.saturating_add(batch - 1) / batch } else { 0 };
    let seq_max = |c: &Ctx, i: usize, total: i64| match c.size(i) {
        s if s < 0 => s,
        s if s % 5 == 4 => s % 7,
        _ => span(total),
    };
    let (max_q, max_k) = (seq_max(c, 6, tq), seq_max(c, 7, tk));
    let (slopes_per_batch, causal, scale) = (c.case.ints[2], c.case.ints[3], c.case.scalars[0]);

    if batch < 0 || tq < 0 || tk < 0 || max_q < 0 || (bwd && max_k < 0) || heads < 1 || heads_k < 1 {
        c.invalid(SIZE, format!("batch {batch}, totals {tq}/{tk}, heads {heads}/{heads_k}, max {max_q}/{max_k}"));
    } else if heads % heads_k != 0 {
        c.invalid(SIZE, format!("heads {heads} % heads_k {heads_k}"));
    }
    if ![32, 64, 96, 128].contains(&head_dim) {
        c.invalid(SIZE, format!("head_dim {head_dim}"));
    }
    if batch > 65535 || heads > 65535 || max_q > i64::from(i32::MAX) || max_k > i64::from(i32::MAX) {
        c.unsure("a grid limit kiln.h does not state (batch, heads <= 65535; max_seqlen < 2^31)");
    }
    if !scale.is_finite() {
        c.invalid(VALUE, format!("softmax_scale {scale}"));
    }
    let q = c.input("q", e, prod(&[tq, heads, head_dim]));
    let k = c.input("k", e, prod(&[tk, heads_k, head_dim]));
    let v = c.input("v", e, prod(&[tk, heads_k, head_dim]));
    for s in [q, k, v] {
        c.set_align(s, 16, true);
    }
    let cu_q = c.input("cu_seqlens_q", 4, batch.checked_add(1));
    let cu_k = c.input("cu_seqlens_k", 4, batch.checked_add(1));
    if let Some(d) = cu_seqlens(c, batch, tq) {
        c.set_data(cu_q, d);
    }
    if let Some(d) = cu_seqlens(c, batch, tk) {
        c.set_data(cu_k, d);
    }
    let slopes_count = if slopes_per_batch != 0 { prod(&[batch, heads]) } else { Some(heads) };
    let slopes = c.opt_input("slopes", 4, slopes_count);
    let positions = c.opt_input("positions", 4, prod(&[tq, 3]));
    // Prefix-LM lengths: any i32 is valid (kiln.h clamps them to [0, sk]); NULL is plain causal.
    let prefix = c.opt_input("prefix_len", 4, Some(batch.max(0)));
    let use_positions = positions_wanted && !c.is_null(positions);
    if use_positions && c.is_null(slopes) {
        c.invalid(VALUE, "positions without slopes");
    }
    if use_positions && tq != tk {
        c.invalid(SIZE, format!("positions with total_q {tq} != total_k {tk}"));
    }
    if !positions_wanted {
        c.absent(positions);
    }
    Attn {
        elem: e,
        positions_used: use_positions,
        prefix,
        batch,
        tq,
        tk,
        heads,
        heads_k,
        head_dim,
        max_q,
        max_k,
        slopes_per_batch,
        causal,
        scale,
        q,
        k,
        v,
        cu_q,
        cu_k,
        slopes,
        positions,
    }
}

fn attention_launchers() -> Vec<Launcher> {
    let mut v = Vec::new();
    v.push(launcher("attention_alibi_fwd", |c| {
        let a = attention_common(c, false);
        let e = a.elem;
        let out = c.output("out", e, prod(&[a.tq, a.heads, a.head_dim]));
        // kiln.h names q, k, v 16-byte aligned; out is written in 16-byte chunks too.
        c.set_align(out, 16, false);
        let lse = c.output("lse", 4, prod(&[a.heads, a.tq]));
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_attention_alibi_fwd(
                d,
                p.r(a.q),
                p.r(a.k),
                p.r(a.v),
                p.r(a.cu_q),
                p.r(a.cu_k),
                p.r(a.slopes),
                a.slopes_per_batch,
                p.r(a.positions),
                a.batch,
                a.tq,
                a.tk,
                a.heads,
                a.heads_k,
                a.head_dim,
                a.max_q,
                a.causal,
                p.r(a.prefix),
                a.scale,
                p.w(out),
                p.w(lse),
                null_mut(),
            )
        })
    }));
    v.push(launcher("attention_alibi_fwd_variant", |c| {
        let a = attention_with_dims(c, false, &VARIANT_DIMS);
        let e = a.elem;
        // kiln.h: tile variants of D = 128 (8) and 64 (8), bf16, no geometric ALiBi; drawn from
        // -1..=8, so mostly in range.
        let variant = c.case.ints[0].rem_euclid(40) / 4 - 1;
        let count = match a.head_dim {
            128 | 64 => 8,
            _ => 0,
        };
        if variant < 0 || variant >= count {
            c.invalid(VALUE, format!("variant {variant} of head_dim {}", a.head_dim));
        }
        // Half of the f16 cases call with bf16 (the same storage size): the variants run bf16 only,
        // and enough valid calls keep the launcher's success count well above zero.
        let dtype = if c.case.dtype == F16 && c.case.ints[0].rem_euclid(80) >= 40 { BF16 } else { c.case.dtype };
        if dtype != BF16 {
            c.invalid(DTYPE, "variants run bf16 only");
        }
        if a.positions_used {
            c.invalid(VALUE, "variants do not run geometric ALiBi");
        }
        let out = c.output("out", e, prod(&[a.tq, a.heads, a.head_dim]));
        c.set_align(out, 16, false);
        let lse = c.output("lse", 4, prod(&[a.heads, a.tq]));
        let d = kiln_dtype(dtype);
        Box::new(move |p| unsafe {
            ffi::kiln_attention_alibi_fwd_variant(
                variant,
                d,
                p.r(a.q),
                p.r(a.k),
                p.r(a.v),
                p.r(a.cu_q),
                p.r(a.cu_k),
                p.r(a.slopes),
                a.slopes_per_batch,
                p.r(a.positions),
                a.batch,
                a.tq,
                a.tk,
                a.heads,
                a.heads_k,
                a.head_dim,
                a.max_q,
                a.causal,
                p.r(a.prefix),
                a.scale,
                p.w(out),
                p.w(lse),
                null_mut(),
            )
        })
    }));
    v.push(launcher("attention_alibi_bwd", |c| {
        let a = attention_common(c, true);
        let e = a.elem;
        let nq = prod(&[a.tq, a.heads, a.head_dim]);
        let nk = prod(&[a.tk, a.heads_k, a.head_dim]);
        let out = c.input("out", e, nq);
        let lse = c.input("lse", 4, prod(&[a.heads, a.tq]));
        let dout = c.input("dout", e, nq);
        c.set_align(dout, 16, true);
        let dq = c.output("dq", e, nq);
        let dk = c.output("dk", e, nk);
        let dv = c.output("dv", e, nk);
        // Written in pairs (4 bytes) by the kernels; kiln.h says only "in dtype".
        for s in [out, dq, dk, dv] {
            c.set_align(s, 4, false);
        }
        let slopes_count = c.bufs[a.slopes].count.map(|n| n as i64);
        let dslopes = c.opt_output("dslopes", 4, slopes_count);
        let dpositions = c.opt_output("dpositions", 4, prod(&[a.tq, 3]));
        // Asked for with positions mostly; without them now and then (an invalid value).
        if c.bufs[a.positions].absent && a.causal % 4 != 0 {
            c.absent(dpositions);
        }
        if !c.is_null(dslopes) && c.is_null(a.slopes) {
            c.invalid(VALUE, "dslopes without slopes");
        }
        let positions_given = !c.is_null(a.positions);
        if !c.is_null(dpositions) && !positions_given {
            c.invalid(VALUE, "dpositions without positions");
        }
        // SAFETY: a pure size query.
        let query = unsafe { ffi::kiln_attention_alibi_bwd_workspace_bytes(a.tq, a.tk, a.heads, a.heads_k) };
        if query < 0 {
            // kiln.h: the query answers -1 for invalid sizes (its limits: totals <= 2^40,
            // heads <= 65535), and this launcher always needs its workspace.
            c.invalid(SIZE, "the workspace query calls these sizes invalid");
        }
        let (ws, ws_bytes) = c.workspace(query, true, true, false);
        c.set_align(ws, 16, true);
        let d = c.dtype();
        Box::new(move |p| unsafe {
            ffi::kiln_attention_alibi_bwd(
                d,
                p.r(a.q),
                p.r(a.k),
                p.r(a.v),
                p.r(out),
                p.r(lse),
                p.r(dout),
                p.r(a.cu_q),
                p.r(a.cu_k),
                p.r(a.slopes),
                a.slopes_per_batch,
                p.r(a.positions),
                a.batch,
                a.tq,
                a.tk,
                a.heads,
                a.heads_k,
                a.head_dim,
                a.max_q,
                a.max_k,
                a.causal,
                p.r(a.prefix),
                a.scale,
                p.w(dq),
                p.w(dk),
                p.w(dv),
                p.w(dslopes),
                p.w(dpositions),
                p.w(ws),
                ws_bytes,
                null_mut(),
            )
        })
    }));
    v.push(launcher("attention_lse_pad_fwd", |c| {
        let heads = c.sz(0, |s| s % 5);
        let nnz = c.sz(1, |s| s % 20);
        let tokens = c.sz(2, |s| if s % 6 == 5 { nnz.saturating_sub(1) } else { nnz.saturating_add(s % 10) });
        if heads < 0 || nnz < 0 || tokens < 0 {
            c.invalid(SIZE, format!("heads {heads}, nnz {nnz}, tokens {tokens}"));
        } else if prod(&[heads, tokens, 4]).is_none() || prod(&[heads, nnz, 4]).is_none() {
            c.invalid(SIZE, format!("heads {heads} × tokens {tokens} / nnz {nnz} overflows"));
        } else if nnz > tokens || tokens > i64::from(i32::MAX) {
            c.unsure(format!("nnz {nnz} > tokens {tokens}, or tokens past int32 (undocumented)"));
        }
        let packed = c.opt_input("lse_packed", 4, prod(&[heads, nnz]));
        let indices = c.opt_input("indices", 4, Some(nnz));
        if let Some(data) = index_data(c, nnz, tokens) {
            c.set_data(indices, data);
        }
        c.require_if(packed, heads > 0 && nnz > 0);
        c.require_if(indices, heads > 0 && nnz > 0);
        if heads == 0 && nnz > 0 && c.is_null(indices) {
            c.unsure("indices NULL with no head to scatter");
        }
        let lse = c.output("lse", 4, prod(&[heads, tokens]));
        Box::new(move |p| unsafe {
            ffi::kiln_attention_lse_pad_fwd(p.r(packed), p.r(indices), heads, nnz, tokens, p.w(lse), null_mut())
        })
    }));
    v
}

/// A tensor-product plan: which kind the case picks, with its device tables as fixed buffers.
struct Plan {
    /// None: the plan pointer itself is NULL.
    host: Option<kiln_tp_plan>,
    tables: [usize; 5],
    dim1: i64,
    dim2: i64,
    dim_out: i64,
    wn: i64,
}

fn plan(c: &mut Ctx) -> Plan {
    let kind = c.case.ints[1].rem_euclid(8);
    let m1 = 1 + c.sz(6, |s| s % 3).rem_euclid(3) as i32;
    let m2 = 1 + c.sz(7, |s| s % 3).rem_euclid(3) as i32;
    let uvw = kind == 1;
    let m_out = if uvw { 2 } else { m1 };
    // One path 0e x 0e -> 0e: every index in range for these row widths.
    let path = kiln_tp_path {
        off1: 0,
        mul1: m1,
        dim1: 1,
        off2: 0,
        mul2: m2,
        dim2: 1,
        off_out: 0,
        mul_out: m_out,
        dim_out: 1,
        mode: i32::from(uvw),
        weight_offset: 0,
        cg_start: 0,
        cg_count: 1,
        coef: 1.0,
    };
    // SAFETY: kiln_tp_path is plain integers and a float.
    let path_bytes = unsafe {
        std::slice::from_raw_parts((&path as *const kiln_tp_path).cast::<u8>(), std::mem::size_of::<kiln_tp_path>())
    }
    .to_vec();
    let paths = c.buf("plan.paths", Role::In, 4, Some((path_bytes.len() / 4) as i64), false);
    c.bufs[paths].data = Some(path_bytes);
    let cg_ijk = c.data_input("plan.cg_ijk", &[0i32], false);
    let cg_val = c.data_input("plan.cg_val", &[1.0f32], false);
    let cg_f64 = c.data_input("plan.cg_val_f64", &[1.0f64], false);
    let coef_f64 = c.data_input("plan.coef_f64", &[1.0f64], false);
    let tables = [paths, cg_ijk, cg_val, cg_f64, coef_f64];
    for t in tables {
        c.bufs[t].fixed = true;
    }
    let (dim1, dim2, dim_out) = (i64::from(m1), i64::from(m2), i64::from(m_out));
    let wn = i64::from(m1 * m2 * if uvw { m_out } else { 1 });
    let mut p = Plan { host: None, tables, dim1, dim2, dim_out, wn };
    let host = |n_paths: i32, dims: [i64; 4]| kiln_tp_plan {
        paths: null(),
        n_paths,
        cg_ijk: null(),
        cg_val: null(),
        dim1: dims[0],
        dim2: dims[1],
        dim_out: dims[2],
        weight_numel: dims[3],
        cg_val_f64: null(),
        coef_f64: null(),
        wigner_cg: 0,
    };
    match kind {
        // A real one-path plan (the call fills in its table pointers).
        0..=2 => p.host = Some(host(1, [dim1, dim2, dim_out, wn])),
        // No path, any row widths: valid for any sizes (nothing is read through a path).
        3 | 4 => {
            let d = |c: &Ctx, i: usize| small(c.size(i)).map_or(c.size(i), |s| s % 5);
            let dims = [d(c, 4), d(c, 5), d(c, 6), d(c, 7)];
            if dims.iter().any(|&x| x < 0) {
                c.invalid(SIZE, format!("plan dims {dims:?}"));
            } else if dims.iter().any(|&x| x > i64::from(i32::MAX)) {
                c.invalid(SIZE, format!("plan dims {dims:?} past int32 (documented: addressable rows)"));
            }
            [p.dim1, p.dim2, p.dim_out, p.wn] = dims;
            p.host = Some(host(0, dims));
        }
        // The plan pointer is NULL.
        5 => c.invalid(NULL, "plan is NULL"),
        // A path count with no tables, or a negative one.
        6 => {
            c.invalid(NULL, "plan has paths but NULL tables");
            p.host = Some(host(1, [dim1, dim2, dim_out, wn]));
            p.tables = [usize::MAX; 5];
        }
        _ => {
            c.invalid(SIZE, "plan has a negative path count");
            p.host = Some(host(-1, [dim1, dim2, dim_out, wn]));
            p.tables = [usize::MAX; 5];
        }
    }
    p
}

impl Plan {
    /// The host plan with its device tables' pointers, or NULL.
    fn with<R>(&self, p: &Ptrs, f: impl FnOnce(*const kiln_tp_plan) -> R) -> R {
        match self.host {
            None => f(null()),
            Some(mut h) => {
                if h.n_paths > 0 && self.tables[0] != usize::MAX {
                    h.paths = p.r(self.tables[0]);
                    h.cg_ijk = p.r(self.tables[1]);
                    h.cg_val = p.r(self.tables[2]);
                    h.cg_val_f64 = p.r(self.tables[3]);
                    h.coef_f64 = p.r(self.tables[4]);
                }
                f(&h)
            }
        }
    }
}

/// rows·width addressable (the equivariant launchers' `fits`): an overflow is an argument error.
fn fits(c: &mut Ctx, what: &str, rows: i64, width: i64) {
    if rows < 0 || prod(&[rows, width, 4]).is_none() {
        c.invalid(SIZE, format!("{what}: {rows} × {width}"));
    }
}

/// CSR offsets [n + 1] with every edge on row 0, and edge ids in order: a valid graph when n >= 1.
fn csr(n: i64, edges: i64) -> Option<Vec<i32>> {
    let n = usize::try_from(n).ok().filter(|&n| n <= MAX_DATA)?;
    let edges = i32::try_from(edges).ok()?;
    Some((0..=n).map(|i| if i == 0 { 0 } else { edges }).collect())
}

fn iota(n: i64) -> Option<Vec<i32>> {
    let n = i32::try_from(n).ok().filter(|&n| n as usize <= MAX_DATA)?;
    Some((0..n.max(0)).collect())
}

fn zeros(n: i64) -> Option<Vec<i32>> {
    usize::try_from(n).ok().filter(|&n| n <= MAX_DATA).map(|n| vec![0; n])
}

/// An index input with valid contents (the equivariant launchers do not check indices): without
/// them (too many to build) the call cannot be valid and is made only if it must be refused.
fn index_input(c: &mut Ctx, name: &'static str, count: i64, data: Option<Vec<i32>>, optional: bool) -> usize {
    let slot = c.buf(name, Role::In, 4, Some(count), optional);
    match data {
        Some(d) => c.set_data(slot, bytes_of(&d)),
        None if count > 0 => c.unsatisfiable = Some(format!("no valid data for {name} [{count}]")),
        None => {}
    }
    slot
}

fn equivariant_launchers() -> Vec<Launcher> {
    let mut v = Vec::new();
    for bwd in [false, true] {
        v.push(launcher(if bwd { "equivariant_sh_bwd" } else { "equivariant_sh_fwd" }, move |c| {
            let e = c.storage(FLOATS_F64);
            let n = c.sz(0, |s| s % 30);
            let norm = match c.case.ints[1] {
                3 | 4 => 0,
                v => v,
            };
            let (lmax, normalize) = (c.case.ints[0], c.case.ints[2]);
            if n < 0 || !(0..=4).contains(&lmax) || prod(&[n, 32]).is_none() {
                c.invalid(SIZE, format!("n {n}, lmax {lmax}"));
            }
            if !(0..=2).contains(&norm) {
                c.invalid(VALUE, format!("normalization {norm}"));
            }
            c.empty = n == 0;
            let width = i64::from(lmax.clamp(0, 4) + 1).pow(2);
            let vec = c.input("vec", e, prod(&[n, 3]));
            let d = c.dtype();
            let norm = kiln_sh_normalization(norm as u32);
            if bwd {
                let dsh = c.input("dsh", e, prod(&[n, width]));
                let dvec = c.output("dvec", e, prod(&[n, 3]));
                Box::new(move |p| unsafe {
                    ffi::kiln_equivariant_sh_bwd(d, p.r(vec), p.r(dsh), n, lmax, norm, normalize, p.w(dvec), null_mut())
                })
            } else {
                let sh = c.output("sh", e, prod(&[n, width]));
                Box::new(move |p| unsafe {
                    ffi::kiln_equivariant_sh_fwd(d, p.r(vec), n, lmax, norm, normalize, p.w(sh), null_mut())
                })
            }
        }));
    }
    // tp (batch) and conv (graph) share their model: a batch is a graph without index arrays.
    // Direction 0 forward, 1 backward, 2 double backward (the backward's arguments and more).
    for (graph, direction) in [(false, 0), (false, 1), (false, 2), (true, 0), (true, 1), (true, 2)] {
        let bwd = direction > 0;
        let name = match (graph, direction) {
            (false, 0) => "equivariant_tp_fwd",
            (false, 1) => "equivariant_tp_bwd",
            (false, _) => "equivariant_tp_bwd2",
            (true, 0) => "equivariant_conv_fwd",
            (true, 1) => "equivariant_conv_bwd",
            (true, _) => "equivariant_conv_bwd2",
        };
        v.push(launcher(name, move |c| {
            let e = c.storage(FLOATS_F64);
            let nodes = c.sz(0, |s| s % 10);
            let edges = if graph { c.sz(1, |s| s % 16) } else { nodes };
            let shared = c.case.ints[2];
            let pl = plan(c);
            fits(c, "nodes × dim1", nodes, pl.dim1);
            fits(c, "nodes × dim_out", nodes, pl.dim_out);
            fits(c, "edges × dim2", edges, pl.dim2);
            fits(c, "edges × weight_numel", edges, pl.wn);
            if nodes > i64::from(i32::MAX) || edges > i64::from(i32::MAX) {
                c.unsure("nodes or edges past int32 (undocumented)");
            }
            let wn = if shared != 0 { Some(pl.wn) } else { prod(&[edges, pl.wn]) };
            let x = c.input("x", e, prod(&[nodes, pl.dim1]));
            let y = c.input("y", e, prod(&[edges, pl.dim2]));
            let w = c.input("w", e, wn);
            // Graph index arrays: all edges into node 0 from node 0 (valid when nodes >= 1).
            let mut idx = [usize::MAX; 6]; // src, dst, dst_ptr, dst_perm, src_perm, src_ptr
            if graph {
                idx[0] = index_input(c, "src", edges, zeros(edges), true);
                if bwd {
                    idx[1] = index_input(c, "dst", edges, zeros(edges), true);
                }
                idx[2] = index_input(c, "dst_ptr", nodes.saturating_add(1), csr(nodes, edges), true);
                // The receiver order: NULL means the edges are sorted (kiln.h); the forward
                // passes read it.
                if direction != 1 {
                    idx[3] = index_input(c, "dst_perm", edges, iota(edges), true);
                }
                if bwd {
                    idx[4] = index_input(c, "src_perm", edges, iota(edges), true);
                    idx[5] = index_input(c, "src_ptr", nodes.saturating_add(1), csr(nodes, edges), true);
                }
                let given: Vec<bool> = idx.iter().map(|&s| s != usize::MAX && !c.is_null(s)).collect();
                if given.iter().any(|&g| g) {
                    // Graph mode: the CSR offsets always (the double backward's forward passes
                    // need dst_ptr too), the per-edge arrays when there are edges.
                    let csr_slot = if bwd { idx[5] } else { idx[2] };
                    c.require_if(csr_slot, true);
                    c.require_if(idx[2], direction == 2);
                    for s in [idx[0], idx[1], idx[4]] {
                        if s != usize::MAX {
                            c.require_if(s, edges > 0);
                        }
                    }
                    if nodes == 0 && edges > 0 {
                        c.unsatisfiable = Some("edges without nodes: no valid index exists".into());
                    }
                } else if nodes != edges {
                    c.invalid(SIZE, format!("no graph and nodes {nodes} != edges {edges}"));
                }
            }
            let d = c.dtype();
            if !bwd {
                let out = c.output("out", e, prod(&[nodes, pl.dim_out]));
                return Box::new(move |p| unsafe {
                    pl.with(p, |plan| {
                        if graph {
                            ffi::kiln_equivariant_conv_fwd(
                                d,
                                plan,
                                p.r(x),
                                p.r(y),
                                p.r(w),
                                shared,
                                p.r(idx[0]),
                                p.r(idx[2]),
                                p.r(idx[3]),
                                nodes,
                                edges,
                                p.w(out),
                                null_mut(),
                            )
                        } else {
                            ffi::kiln_equivariant_tp_fwd(
                                d,
                                plan,
                                p.r(x),
                                p.r(y),
                                p.r(w),
                                shared,
                                nodes,
                                p.w(out),
                                null_mut(),
                            )
                        }
                    })
                });
            }
            let dout = c.input("dout", e, prod(&[nodes, pl.dim_out]));
            // kiln.h: the double backward's upstream gradients may be NULL (zeros).
            let upstream = (direction == 2).then(|| {
                [
                    c.opt_input("gdx", e, prod(&[nodes, pl.dim1])),
                    c.opt_input("gdy", e, prod(&[edges, pl.dim2])),
                    c.opt_input("gdw", e, wn),
                ]
            });
            let dx = c.output("dx", e, prod(&[nodes, pl.dim1]));
            let dy = c.output("dy", e, prod(&[edges, pl.dim2]));
            let dw = c.output("dw", e, wn);
            let gdout = (direction == 2).then(|| c.output("gdout", e, prod(&[nodes, pl.dim_out])));
            // SAFETY: a pure size query.
            let query = unsafe { ffi::kiln_equivariant_workspace_bytes_for(d, edges, pl.wn, shared) };
            let (ws, ws_bytes) = c.workspace(query, true, true, false);
            c.set_align(ws, if c.case.dtype == F64 { 8 } else { 4 }, false);
            if let (Some([gx, gy, gw]), Some(go)) = (upstream, gdout) {
                return Box::new(move |p| unsafe {
                    pl.with(p, |plan| {
                        if graph {
                            ffi::kiln_equivariant_conv_bwd2(
                                d,
                                plan,
                                p.r(x),
                                p.r(y),
                                p.r(w),
                                shared,
                                p.r(idx[0]),
                                p.r(idx[1]),
                                p.r(idx[2]),
                                p.r(idx[3]),
                                p.r(idx[4]),
                                p.r(idx[5]),
                                p.r(dout),
                                p.r(gx),
                                p.r(gy),
                                p.r(gw),
                                nodes,
                                edges,
                                p.w(dx),
                                p.w(dy),
                                p.w(dw),
                                p.w(go),
                                p.w(ws),
                                ws_bytes,
                                null_mut(),
                            )
                        } else {
                            ffi::kiln_equivariant_tp_bwd2(
                                d,
                                plan,
                                p.r(x),
                                p.r(y),
                                p.r(w),
                                shared,
                                p.r(dout),
                                p.r(gx),
                                p.r(gy),
                                p.r(gw),
                                nodes,
                                p.w(dx),
                                p.w(dy),
                                p.w(dw),
                                p.w(go),
                                p.w(ws),
                                ws_bytes,
                                null_mut(),
                            )
                        }
                    })
                });
            }
            Box::new(move |p| unsafe {
                pl.with(p, |plan| {
                    if graph {
                        ffi::kiln_equivariant_conv_bwd(
                            d,
                            plan,
                            p.r(x),
                            p.r(y),
                            p.r(w),
                            shared,
                            p.r(idx[0]),
                            p.r(idx[1]),
                            p.r(idx[2]),
                            p.r(idx[4]),
                            p.r(idx[5]),
                            p.r(dout),
                            nodes,
                            edges,
                            p.w(dx),
                            p.w(dy),
                            p.w(dw),
                            p.w(ws),
                            ws_bytes,
                            null_mut(),
                        )
                    } else {
                        ffi::kiln_equivariant_tp_bwd(
                            d,
                            plan,
                            p.r(x),
                            p.r(y),
                            p.r(w),
                            shared,
                            p.r(dout),
                            nodes,
                            p.w(dx),
                            p.w(dy),
                            p.w(dw),
                            p.w(ws),
                            ws_bytes,
                            null_mut(),
                        )
                    }
                })
            })
        }));
    }
    // The convolution's device layouts: no dtype; bad index data is a status word, not a refusal.
    v.push(launcher("equivariant_graph_build", |c| {
        let nodes = c.sz(0, |s| s % 10);
        let edges = c.sz(1, |s| s % 16);
        if nodes < 0 || edges < 0 {
            c.invalid(SIZE, format!("nodes {nodes}, edges {edges}"));
        } else if nodes >= i64::from(i32::MAX) || edges > i64::from(i32::MAX) {
            c.invalid(SIZE, format!("nodes {nodes} or edges {edges} past int32"));
        } else if nodes == 0 && edges > 0 {
            c.invalid(SIZE, format!("{edges} edges without a node"));
        }
        // Every edge 0 -> 0 (valid with a node); now and then the receivers decreasing (valid:
        // the build sorts them) or an index past the nodes (a data error the status reports).
        let n = usize::try_from(edges).ok().filter(|&n| n <= MAX_DATA);
        let dst_data = n.map(|n| match c.case.ints[3].rem_euclid(3) {
            0 => vec![0; n],
            1 => (0..n as i32).map(|e| (n as i32 - 1 - e) % nodes.clamp(1, 10) as i32).collect(),
            _ => vec![nodes.clamp(0, i64::from(i32::MAX)) as i32; n],
        });
        let src = index_input(c, "src", edges, zeros(edges), false);
        let dst = index_input(c, "dst", edges, dst_data, false);
        let src_out = c.output("src_out", 4, Some(edges));
        let dst_out = c.output("dst_out", 4, Some(edges));
        let dst_ptr = c.output("dst_ptr", 4, nodes.checked_add(1));
        let dst_perm = c.output("dst_perm", 4, Some(edges));
        let src_perm = c.output("src_perm", 4, Some(edges));
        let src_ptr = c.output("src_ptr", 4, nodes.checked_add(1));
        // dst_ptr, src_ptr and the status words have entries whatever the sizes.
        for slot in [dst_ptr, src_ptr] {
            c.require_if(slot, true);
        }
        let status = c.output("status", 4, Some(2));
        // SAFETY: a pure size query.
        let query = unsafe { ffi::kiln_equivariant_graph_workspace_bytes(nodes, edges) };
        let (ws, ws_bytes) = c.workspace(query, true, true, false);
        Box::new(move |p| unsafe {
            ffi::kiln_equivariant_graph_build(
                p.r(src),
                p.r(dst),
                nodes,
                edges,
                p.w(src_out),
                p.w(dst_out),
                p.w(dst_ptr),
                p.w(dst_perm),
                p.w(src_perm),
                p.w(src_ptr),
                p.w(status),
                p.w(ws),
                ws_bytes,
                null_mut(),
            )
        })
    }));
    for bwd in [false, true] {
        v.push(launcher(if bwd { "equivariant_hessian_bwd" } else { "equivariant_hessian_fwd" }, move |c| {
            let e = c.storage(FLOATS_F64);
            let atoms = c.sz(0, |s| s % 8);
            let edges = c.sz(1, |s| s % 12);
            let molecules = c.sz(2, |s| if s % 7 == 6 { 0 } else { 1 + s % 3 });
            if atoms < 0 || edges < 0 || molecules < 0 {
                c.invalid(SIZE, format!("atoms {atoms}, edges {edges}, molecules {molecules}"));
            } else if molecules > atoms || atoms > i64::from(i32::MAX / 3) || edges > i64::from(i32::MAX) {
                c.unsure("molecules > atoms, or sizes past int32 (undocumented)");
            }
            c.empty = atoms == 0;
            if atoms > 0 && molecules == 0 {
                c.unsatisfiable = Some("atoms without a molecule".into());
            }
            // One molecule holds every atom; the others are empty; every edge is 0 -> 0.
            let m = usize::try_from(molecules).ok().filter(|&m| m <= MAX_DATA);
            let first: Option<Vec<i32>> = m.map(|m| (0..=m).map(|i| if i == 0 { 0 } else { atoms as i32 }).collect());
            let side = atoms.saturating_mul(3);
            let offsets: Option<Vec<i64>> =
                m.map(|m| (0..=m).map(|i| if i == 0 { 0 } else { side.saturating_mul(side) }).collect());
            let d = c.dtype();
            if bwd {
                let dh = c.input("dhessian", e, prod(&[side, side]));
                let src = index_input(c, "src", edges, zeros(edges), false);
                let dst = index_input(c, "dst", edges, zeros(edges), false);
                let atom_mol = index_input(c, "atom_mol", atoms, zeros(atoms), false);
                let mol_first = index_input(c, "mol_first", molecules.saturating_add(1), first, false);
                let mol_offset = c.input("mol_offset", 8, molecules.checked_add(1));
                match &offsets {
                    Some(o) => c.set_data(mol_offset, bytes_of(o)),
                    None => c.unsatisfiable = Some("no valid data for mol_offset".into()),
                }
                let de = c.output("dedge_feat", e, prod(&[edges, 9]));
                let dn = c.output("dnode_feat", e, prod(&[atoms, 9]));
                Box::new(move |p| unsafe {
                    ffi::kiln_equivariant_hessian_bwd(
                        d,
                        p.r(dh),
                        p.r(src),
                        p.r(dst),
                        p.r(atom_mol),
                        p.r(mol_first),
                        p.r(mol_offset),
                        atoms,
                        edges,
                        molecules,
                        p.w(de),
                        p.w(dn),
                        null_mut(),
                    )
                })
            } else {
                let ef = c.input("edge_feat", e, prod(&[edges, 9]));
                let nf = c.input("node_feat", e, prod(&[atoms, 9]));
                let dst = index_input(c, "dst", edges, zeros(edges), false);
                let src_perm = index_input(c, "src_perm", edges, iota(edges), false);
                let src_ptr = index_input(c, "src_ptr", atoms.saturating_add(1), csr(atoms, edges), false);
                let atom_mol = index_input(c, "atom_mol", atoms, zeros(atoms), false);
                let mol_first = index_input(c, "mol_first", molecules.saturating_add(1), first, false);
                let mol_offset = c.input("mol_offset", 8, molecules.checked_add(1));
                match &offsets {
                    Some(o) => c.set_data(mol_offset, bytes_of(o)),
                    None => c.unsatisfiable = Some("no valid data for mol_offset".into()),
                }
                let h = c.output("hessian", e, prod(&[side, side]));
                Box::new(move |p| unsafe {
                    ffi::kiln_equivariant_hessian_fwd(
                        d,
                        p.r(ef),
                        p.r(nf),
                        p.r(dst),
                        p.r(src_perm),
                        p.r(src_ptr),
                        p.r(atom_mol),
                        p.r(mol_first),
                        p.r(mol_offset),
                        atoms,
                        edges,
                        molecules,
                        p.w(h),
                        null_mut(),
                    )
                })
            }
        }));
    }
    v
}

fn launchers() -> Vec<Launcher> {
    let mut v = activation_launchers();
    v.extend(glu_launchers());
    v.extend(norm_launchers());
    v.extend(padding_launchers());
    v.extend(attention_launchers());
    v.extend(equivariant_launchers());
    v
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// An emulated allocation, freed on drop.
struct Alloc {
    ptr: *mut c_void,
    bytes: usize,
    before: Vec<u8>,
}

impl Alloc {
    /// `bytes` filled with `pattern`, with `data` at byte `at` (where the call's pointer is).
    fn new(bytes: usize, data: &[u8], at: usize, pattern: u8) -> Alloc {
        // SAFETY: an allocation of `bytes` (0 allowed), filled through the emulator's own copy so
        // that it counts as written; the host buffer has the same length.
        unsafe {
            let ptr = ffi::runtime::kiln_emu_malloc(bytes);
            assert!(!ptr.is_null(), "emulator out of memory for {bytes} bytes");
            let mut before = vec![pattern; bytes];
            let n = data.len().min(bytes.saturating_sub(at));
            before[at..at + n].copy_from_slice(&data[..n]);
            assert_eq!(ffi::runtime::kiln_emu_memcpy(ptr, before.as_ptr().cast(), bytes), 0);
            Alloc { ptr, bytes, before }
        }
    }

    fn now(&self) -> Vec<u8> {
        let mut now = vec![0u8; self.bytes];
        // SAFETY: reads this allocation into a host buffer of its size.
        let rc = unsafe { ffi::runtime::kiln_emu_memcpy(now.as_mut_ptr().cast(), self.ptr, self.bytes) };
        assert_eq!(rc, 0);
        now
    }
}

impl Drop for Alloc {
    fn drop(&mut self) {
        // SAFETY: allocated by kiln_emu_malloc, freed once; launches are synchronous.
        unsafe { ffi::runtime::kiln_emu_free(self.ptr) }
    }
}

/// What the model expects of a call.
#[derive(Debug, PartialEq)]
enum Verdict {
    Valid,
    /// The violated rules' codes.
    Invalid(BTreeSet<u32>),
    Unsure,
}

/// The outcome of one case, for the tally.
#[derive(Debug)]
enum Outcome {
    Skipped(&'static str),
    Ran { status: u32, verdict: Verdict, launches: u64 },
}

/// Builds the case's call, makes it if the harness can, and checks it (panics on a violation).
fn run_case(launchers: &[Launcher], case: &Case) -> Outcome {
    let l = &launchers[case.launcher];
    let mut c =
        Ctx { case, bufs: Vec::new(), violations: Vec::new(), unsure: Vec::new(), empty: false, unsatisfiable: None };
    let call = (l.build)(&mut c);
    assert!(c.bufs.len() <= SLOTS, "{}: more buffers than slots", l.name);
    c.check_pointers();
    if c.empty {
        // Nothing runs: only the dtype and the sizes are sure to be checked.
        let (keep, soften): (Vec<_>, Vec<_>) =
            c.violations.drain(..).partition(|(code, _)| *code == DTYPE || *code == SIZE);
        c.violations = keep;
        c.unsure.extend(soften.into_iter().map(|(_, why)| format!("empty problem: {why}")));
    }
    let verdict = if !c.violations.is_empty() {
        Verdict::Invalid(c.violations.iter().map(|v| v.0).collect())
    } else if !c.unsure.is_empty() {
        Verdict::Unsure
    } else {
        Verdict::Valid
    };
    if !matches!(verdict, Verdict::Invalid(_)) {
        if c.unsatisfiable.is_some() {
            return Outcome::Skipped("no valid index data");
        }
        let total: u64 = c
            .bufs
            .iter()
            .map(|b| b.count.and_then(|n| n.checked_mul(b.elem)).unwrap_or(u64::MAX).saturating_add(SLACK))
            .fold(0u64, u64::saturating_add);
        if total > CAP_BYTES {
            return Outcome::Skipped("buffers over the cap");
        }
    }

    // Allocate: every buffer that is not NULL, a view or an alias.
    let mut allocs: Vec<Option<Alloc>> = Vec::new();
    for (i, b) in c.bufs.iter().enumerate() {
        let own = b.view.is_none() && !(c.mode(i) == Ptr::Alias);
        if !own || c.mode(i) == Ptr::Null {
            allocs.push(None);
            continue;
        }
        let want = b.count.and_then(|n| n.checked_mul(b.elem)).unwrap_or(u64::MAX);
        let bytes = if want <= CAP_BYTES { want } else { SMALL_BYTES } + SLACK;
        let pattern = 0xA0 | (i as u8 & 0x0F);
        let at = if let Ptr::Offset(k) = c.mode(i) { usize::from(k) } else { 0 };
        allocs.push(Some(Alloc::new(bytes as usize, b.data.as_deref().unwrap_or(&[]), at, pattern)));
    }
    let base = |i: usize, allocs: &[Option<Alloc>]| allocs[i].as_ref().map_or(null_mut(), |a| a.ptr);
    let mut ptrs = vec![null_mut::<c_void>(); c.bufs.len()];
    for (i, b) in c.bufs.iter().enumerate() {
        let mode = c.mode(i);
        let p = match (mode, b.view, b.alias) {
            (Ptr::Null, ..) => null_mut(),
            (Ptr::Alias, _, Some(partner)) => ptrs[partner],
            (_, Some((of, off)), _) => ptrs[of].wrapping_byte_add(off as usize),
            _ => base(i, &allocs),
        };
        ptrs[i] = match mode {
            Ptr::Offset(k) if !p.is_null() => p.wrapping_byte_add(usize::from(k)),
            _ => p,
        };
    }
    // SAFETY: reads a counter.
    let launches_before = unsafe { ffi::runtime::kiln_emu_launch_count() };
    let status = call(&Ptrs(ptrs)).0;
    // SAFETY: reads a counter.
    let launches = unsafe { ffi::runtime::kiln_emu_launch_count() } - launches_before;

    let what = || {
        format!(
            "{} returned {status} ({}); model: {verdict:?}, violations {:?}, unsure {:?}",
            l.name,
            status_text(status),
            c.violations,
            c.unsure
        )
    };
    if status == CUDA || status == CUDA_PENDING {
        // SAFETY: a NUL-terminated string owned by the runtime, copied at once.
        let finding = unsafe { CStr::from_ptr(ffi::runtime::kiln_emu_last_finding()) }.to_string_lossy().into_owned();
        panic!("{}: a launch failed on arguments the launcher accepted: {finding}", what());
    }
    assert!(status <= WORKSPACE, "{}: not a kiln_status", what());
    match &verdict {
        Verdict::Valid => assert_eq!(status, SUCCESS, "{}", what()),
        Verdict::Invalid(codes) => {
            assert_ne!(status, SUCCESS, "{}", what());
            if codes.len() == 1 && c.unsure.is_empty() {
                assert!(codes.contains(&status), "{}: not the documented code", what());
            }
        }
        Verdict::Unsure => {}
    }
    // Nothing written on an error; no input written on success (an aliased one excepted).
    let aliased: BTreeSet<usize> =
        (0..c.bufs.len()).filter_map(|i| if c.mode(i) == Ptr::Alias { c.bufs[i].alias } else { None }).collect();
    for (i, a) in allocs.iter().enumerate() {
        let Some(a) = a else { continue };
        let b = &c.bufs[i];
        let must_keep = status != SUCCESS || (b.role == Role::In && !aliased.contains(&i));
        if must_keep && a.now() != a.before {
            panic!("{}: buffer `{}` ({:?}) was written", what(), b.name, b.role);
        }
    }
    if status != SUCCESS {
        assert_eq!(launches, 0, "{}: an error after launching", what());
    }
    Outcome::Ran { status, verdict, launches }
}

fn status_text(status: u32) -> String {
    // SAFETY: returns a static string for any code.
    unsafe { CStr::from_ptr(ffi::kiln_status_string(kiln_status(status))) }.to_string_lossy().into_owned()
}

/// Random cases over all launchers (a case is one launcher call on the emulator, checked: a
/// millisecond for most, tens for an attention kernel).
const CASES_LAUNCHERS: u32 = 20000;

#[test]
fn c_abi_launchers() {
    // SAFETY: sets a flag; checked mode is what reports a launch that reads or writes past a
    // buffer, reads memory nothing wrote, or races.
    unsafe { ffi::runtime::kiln_emu_set_checked(1) };
    let tally = Tally::new("c abi launchers");
    let all = launchers();
    let names: BTreeSet<&str> = all.iter().map(|l| l.name).collect();
    assert_eq!(names.len(), all.len(), "launcher names are unique");
    // Per launcher: calls that succeeded (kernels launched), calls refused, cases skipped.
    let per = std::sync::Mutex::new(vec![[0u64; 3]; all.len()]);
    proptest!(config(CASES_LAUNCHERS), |(case in case(all.len()))| {
        let outcome = run_case(&all, &case);
        let mut per = per.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Skipped(why) => {
                tally.add(why);
                per[case.launcher][2] += 1;
            }
            Outcome::Ran { status, verdict, launches } => {
                tally.add(match (status, verdict) {
                    (SUCCESS, Verdict::Valid) => "valid calls succeeded",
                    (SUCCESS, _) => "unsure calls succeeded",
                    (_, Verdict::Invalid(_)) => "invalid calls refused",
                    _ => "unsure calls refused",
                });
                if launches > 0 {
                    tally.add("calls that launched kernels");
                }
                per[case.launcher][usize::from(status != SUCCESS)] += 1;
            }
        }
    });
    let per = per.into_inner().unwrap_or_else(|e| e.into_inner());
    let line: Vec<String> = all
        .iter()
        .zip(&per)
        .map(|(l, [ok, refused, skipped])| format!("{} {ok}/{refused}/{skipped}", l.name))
        .collect();
    println!("fuzz c abi launchers, succeeded/refused/skipped: {}", line.join(", "));
    // At the default case count every launcher meets both outcomes many times over (the rarest,
    // attention's backward, succeeds about 30 times in 20000 cases): a launcher that never
    // succeeds means the model (or the launcher) refuses everything, and the fuzzing of its
    // kernels' inputs would be vacuous.
    if config(CASES_LAUNCHERS).cases >= CASES_LAUNCHERS {
        for (l, [ok, refused, _]) in all.iter().zip(&per) {
            assert!(*ok > 0 && *refused > 0, "{}: {ok} calls succeeded, {refused} refused", l.name);
        }
    }
}

/// Sizes for the pure size queries: small, every power of two and its neighbours, negatives.
fn query_size() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 0i64..300,
        4 => (0u32..63, -1i64..=1).prop_map(|(k, d)| (1i64 << k).saturating_add(d)),
        1 => prop::sample::select(vec![i64::MAX, i64::MIN, -1, -2, -(1 << 40)]),
    ]
}

/// Cases of the size-query property (no launch: microseconds each).
const CASES_QUERIES: u32 = 4000;

/// The workspace-size queries, `kiln_status_string` and `kiln_attention_head_dim_supported` on
/// any input: each returns its documented value domain (bytes >= 0 or -1 for invalid sizes, a
/// non-empty string, 0 or 1), and -1 exactly where kiln.h calls the sizes invalid.
#[test]
fn c_abi_size_queries() {
    let tally = Tally::new("c abi size queries");
    let args = (prop::array::uniform4(query_size()), prop_oneof![4 => 0u32..6, 1 => any::<u32>()], int(), any::<u32>());
    proptest!(config(CASES_QUERIES), |(([a, b, c, d], dtype, shared, code) in args)| {
        let bytes_or_invalid = |what: &str, r: i64, invalid: bool| {
            assert!(r == -1 || r >= 0, "{what}({a}, {b}, {c}, {d}) = {r}: neither -1 nor a byte count");
            if invalid {
                assert_eq!(r, -1, "{what}({a}, {b}, {c}, {d}) on invalid sizes");
            }
        };
        // SAFETY: pure functions of their arguments.
        unsafe {
            bytes_or_invalid("kiln_activation_workspace_bytes", ffi::kiln_activation_workspace_bytes(a, b), a < 0 || b < 1 || (a % b.max(1)) != 0);
            bytes_or_invalid("kiln_glu_workspace_bytes", ffi::kiln_glu_workspace_bytes(a, b), a < 0 || b < 1);
            bytes_or_invalid("kiln_norm_workspace_bytes", ffi::kiln_norm_workspace_bytes(a, b), a < 0 || !(1..=65536).contains(&b));
            bytes_or_invalid("kiln_padding_workspace_bytes", ffi::kiln_padding_workspace_bytes(a, b), a < 0 || b < 0);
            bytes_or_invalid(
                "kiln_attention_alibi_bwd_workspace_bytes",
                ffi::kiln_attention_alibi_bwd_workspace_bytes(a, b, c, d),
                a < 0 || b < 0 || c < 1 || d < 1,
            );
            bytes_or_invalid("kiln_equivariant_workspace_bytes", ffi::kiln_equivariant_workspace_bytes(a, b, shared), a < 0 || b < 0);
            // f64 partials take 8 bytes: past 2^60 of them the query says -1 (regression test below).
            let f64_overflow = dtype == F64 && shared != 0 && prod(&[a, b, 8]).is_none();
            bytes_or_invalid(
                "kiln_equivariant_workspace_bytes_for",
                ffi::kiln_equivariant_workspace_bytes_for(kiln_dtype(dtype), a, b, shared),
                a < 0 || b < 0 || !FLOATS_F64.contains(&dtype) || f64_overflow,
            );
            let supported = ffi::kiln_attention_head_dim_supported(a);
            assert_eq!(supported, i32::from([32, 64, 96, 128].contains(&a)), "head_dim {a}");
            let text = ffi::kiln_status_string(kiln_status(code));
            assert!(!text.is_null() && !CStr::from_ptr(text).to_bytes().is_empty(), "kiln_status_string({code})");
        }
        tally.add("argument tuples");
    });
}

/// Regression (found by `c_abi_launchers`): kiln_attention_lse_pad_fwd (kernels/attention.cu)
/// checks heads, nnz, tokens >= 0, nnz <= tokens and tokens <= INT32_MAX, but not the products
/// heads·tokens and heads·nnz: heads = 2^62 with tokens = 4 wraps heads·tokens to 0, and the
/// call returns KILN_SUCCESS having checked nothing; with nnz = 3 and heads = 2^61 + 1 it
/// launches its fill and scatter kernels on wrapped counts (the emulator stopped the scatter
/// after 5 s in a loop over a wrapped range). kiln.h promises KILN_ERROR_INVALID_SIZE for sizes
/// that cannot be; the fix belongs in the launcher (heads <= INT64_MAX / tokens, and / nnz).
#[test]
fn regression_lse_pad_size_overflow() {
    let lse = Alloc::new(64, &[], 0, 0x5A);
    // SAFETY: the sizes wrap to 0 elements: nothing is launched or touched either way.
    let status = unsafe { ffi::kiln_attention_lse_pad_fwd(null(), null(), 1 << 62, 0, 4, lse.ptr.cast(), null_mut()) };
    assert_eq!(status.0, SIZE, "heads 2^62 × tokens 4 overflows int64");
    assert_eq!(lse.now(), lse.before);
}

/// Regression (found by `c_abi_launchers`): kiln_attention_lse_pad_fwd's scatter stored
/// lse[h, indices[i]] with plain stores, so equal indices (a caller's, not unpad's) were a data
/// race the emulator stopped as a launch failure. The stores are atomic now: one of the values
/// lands (kiln.h: unspecified which) and the other entries stay -inf.
#[test]
fn regression_lse_pad_equal_indices() {
    let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let packed = Alloc::new(12, &f(&[1.0, 2.0, 3.0]), 0, 0x5A);
    let indices = Alloc::new(12, &[0u8; 12], 0, 0x5A);
    let lse = Alloc::new(12, &[], 0, 0x5A);
    // SAFETY: three packed entries, three indices and three lse entries, all allocated.
    let status = unsafe {
        ffi::kiln_attention_lse_pad_fwd(packed.ptr.cast(), indices.ptr.cast(), 1, 3, 3, lse.ptr.cast(), null_mut())
    };
    assert_eq!(status.0, SUCCESS);
    let got: Vec<f32> = lse.now().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!([1.0, 2.0, 3.0].contains(&got[0]), "lse[0] = {}", got[0]);
    assert_eq!(&got[1..], &[f32::NEG_INFINITY; 2]);
}

/// Regression (found by `c_abi_size_queries`): kiln_equivariant_workspace_bytes_for
/// (kernels/equivariant.cu, workspace_bytes) multiplies edges·weight_numel·8 for f64 storage with
/// only `fits` (edges·weight_numel <= INT64_MAX / 4) checked, so edges = weight_numel = 2^30 + 1
/// overflows and returns a negative byte count that is not -1. kiln_equivariant_conv_bwd and
/// kiln_equivariant_tp_bwd compute their `needed` the same way, so such a call passes
/// `workspace_bytes < needed` with any workspace and runs its kernels on one too small.
#[test]
fn regression_equivariant_f64_workspace_overflow() {
    let n = (1i64 << 30) + 1;
    // SAFETY: a pure size query.
    let bytes = unsafe { ffi::kiln_equivariant_workspace_bytes_for(kiln_dtype(F64), n, n, 1) };
    assert!(bytes == -1 || bytes > 0, "workspace bytes for f64, {n} edges × {n} weights: {bytes}");
}
