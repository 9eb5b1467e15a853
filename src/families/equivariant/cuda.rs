// The equivariant family's launch code, compiled once per kernel library: equivariant/mod.rs
// includes this file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by mod.rs; this allocates outputs and calls the C
// ABI on the device.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use super::kernel_kind::table_kernels;
use super::sh::{Sh, ShNormalization, sh_dim};
use super::tp::{Mode, TpPlan};
use super::operands::{DoubleGrads, Grads, GraphView, HessianOperands, Operands, UpstreamGrads};
use crate::core::dtype::DType;
use crate::core::device::Device;
use crate::core::error::Result;
use crate::core::gpu::{Gpu, Guard};
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

fn normalization(n: ShNormalization) -> ffi::kiln_sh_normalization {
    match n {
        ShNormalization::Component => ffi::kiln_sh_normalization::KILN_SH_COMPONENT,
        ShNormalization::Norm => ffi::kiln_sh_normalization::KILN_SH_NORM,
        ShNormalization::Integral => ffi::kiln_sh_normalization::KILN_SH_INTEGRAL,
    }
}

pub(in crate::families::equivariant) fn sh_forward(sh: &Sh, vec: &Tensor, n: usize, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let mut out = Tensor::uninit(&[n, sh_dim(sh.lmax)], vec.dtype(), &gpu.device())?;
    let status = {
        let (vp, _vg) = vec.dev_ptr(gpu);
        let (op, _og) = out.dev_ptr_mut(gpu);
        // SAFETY: shapes and dtypes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_equivariant_sh_fwd(
                vec.dtype().to_ffi(),
                vp as *const c_void,
                n as i64,
                sh.lmax as i32,
                normalization(sh.normalization),
                i32::from(sh.normalize),
                op as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_equivariant_sh_fwd".into())?;
    Ok(out)
}

pub(in crate::families::equivariant) fn sh_backward(sh: &Sh, vec: &Tensor, dsh: &Tensor, n: usize, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let mut dvec = Tensor::uninit(&[n, 3], vec.dtype(), &gpu.device())?;
    let status = {
        let (vp, _vg) = vec.dev_ptr(gpu);
        let (gp, _gg) = dsh.dev_ptr(gpu);
        let (dp, _dg) = dvec.dev_ptr_mut(gpu);
        // SAFETY: shapes and dtypes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_equivariant_sh_bwd(
                vec.dtype().to_ffi(),
                vp as *const c_void,
                gp as *const c_void,
                n as i64,
                sh.lmax as i32,
                normalization(sh.normalization),
                i32::from(sh.normalize),
                dp as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_equivariant_sh_bwd".into())?;
    Ok(dvec)
}

/// A plan's paths and CG tables, uploaded: the f32 values, or for f64 storage the f64 values
/// and path coefficients (the f32 ones are then not uploaded).
struct DevicePlan {
    paths: Tensor,
    cg_ijk: Tensor,
    cg_val: Option<Tensor>,
    cg_val_f64: Option<Tensor>,
    coef_f64: Option<Tensor>,
}

/// A plan's tables as the device reads them: the paths (13 i32 fields each), the CG entries'
/// packed (i, j, k) and values, and the path coefficients in f64.
#[derive(PartialEq)]
struct PlanTables {
    paths: Vec<i32>,
    ijk: Vec<i32>,
    val: Vec<f64>,
    coef: Vec<f64>,
}

/// Plans already uploaded, newest last: a call whose plan, dtype and device match one reuses
/// its buffers, so a step that repeats its calls uploads nothing (no pageable copy for a CUDA
/// graph to trip on) after the first. Keyed by the tables themselves (a few kB), compared in
/// full; a handful of plans per model, so a short list.
static PLANS: Mutex<Vec<CachedPlan>> = Mutex::new(Vec::new());
const PLAN_CACHE_SIZE: usize = 32;

/// One uploaded plan and what it was uploaded for.
struct CachedPlan {
    tables: PlanTables,
    dtype: DType,
    device: Device,
    plan: Arc<DevicePlan>,
}
/// The uploaded plan for `plan` in `dtype` on `gpu`'s device, from the cache or uploaded now.
fn device_plan(plan: &TpPlan, dtype: DType, gpu: &Gpu) -> Result<Arc<DevicePlan>> {
    let tables = plan_tables(plan);
    let device = gpu.device();
    let mut cache = PLANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = cache.iter().find(|c| c.tables == tables && c.dtype == dtype && c.device.same_memory(&device)) {
        return Ok(Arc::clone(&c.plan));
    }
    let plan = Arc::new(upload_plan(&tables, dtype, gpu)?);
    if cache.len() == PLAN_CACHE_SIZE {
        cache.remove(0);
    }
    cache.push(CachedPlan { tables, dtype, device, plan: Arc::clone(&plan) });
    Ok(plan)
}

fn plan_tables(plan: &TpPlan) -> PlanTables {
    let (b1, b2, bo) = (plan.irreps_in1.blocks(), plan.irreps_in2.blocks(), plan.irreps_out.blocks());
    let (o1, o2, oo) = (plan.irreps_in1.offsets(), plan.irreps_in2.offsets(), plan.irreps_out.offsets());
    let mut paths: Vec<i32> = Vec::new();
    let mut ijk: Vec<i32> = Vec::new();
    let mut val: Vec<f64> = Vec::new();
    let mut coef: Vec<f64> = Vec::new();
    for ins in &plan.instructions {
        let mode = match ins.mode {
            Mode::Uvu => ffi::kiln_tp_mode::KILN_TP_UVU.0 as i32,
            Mode::Uvw => ffi::kiln_tp_mode::KILN_TP_UVW.0 as i32,
        };
        let fields = [
            o1[ins.i1],
            b1[ins.i1].mul,
            b1[ins.i1].ir.dim(),
            o2[ins.i2],
            b2[ins.i2].mul,
            b2[ins.i2].ir.dim(),
            oo[ins.i_out],
            bo[ins.i_out].mul,
            bo[ins.i_out].ir.dim(),
        ];
        paths.extend(fields.iter().map(|&f| f as i32));
        paths.extend([mode, ins.weight_offset as i32, ijk.len() as i32, ins.cg.len() as i32]);
        paths.push((ins.coef as f32).to_bits() as i32);
        coef.push(ins.coef);
        for &(i, j, k, c) in &ins.cg {
            ijk.push((i | j << 8 | k << 16) as i32);
            val.push(c);
        }
    }
    // Never an empty buffer: an empty plan still passes valid (unread) pointers.
    for v in [&mut paths, &mut ijk] {
        if v.is_empty() {
            v.push(0);
        }
    }
    for v in [&mut val, &mut coef] {
        if v.is_empty() {
            v.push(0.0);
        }
    }
    PlanTables { paths, ijk, val, coef }
}

fn upload_plan(tables: &PlanTables, dtype: DType, gpu: &Gpu) -> Result<DevicePlan> {
    let PlanTables { paths, ijk, val, coef } = tables;
    let device = gpu.device();
    let (np, ni, nv, nc) = (paths.len(), ijk.len(), val.len(), coef.len());
    let f64 = dtype == DType::F64;
    Ok(DevicePlan {
        paths: Tensor::from_vec(paths.clone(), &[np])?.to_device(&device)?,
        cg_ijk: Tensor::from_vec(ijk.clone(), &[ni])?.to_device(&device)?,
        cg_val: (!f64).then(|| Tensor::from_f64(val, &[nv], DType::F32)?.to_device(&device)).transpose()?,
        cg_val_f64: f64.then(|| Tensor::from_vec(val.clone(), &[nv])?.to_device(&device)).transpose()?,
        coef_f64: f64.then(|| Tensor::from_vec(coef.clone(), &[nc])?.to_device(&device)).transpose()?,
    })
}

/// Runs `f` with the C plan of `plan` (pointers into `dev`, valid while `f` runs).
fn with_plan<R>(plan: &TpPlan, dev: &DevicePlan, gpu: &Gpu, f: impl FnOnce(&ffi::kiln_tp_plan) -> R) -> R {
    let (pp, _pg) = dev.paths.dev_ptr(gpu);
    let (ip, _ig) = dev.cg_ijk.dev_ptr(gpu);
    let (vp, _vg) = dev.cg_val.as_ref().map(|t| t.dev_ptr(gpu)).unzip();
    let (v64p, _v64g) = dev.cg_val_f64.as_ref().map(|t| t.dev_ptr(gpu)).unzip();
    let (c64p, _c64g) = dev.coef_f64.as_ref().map(|t| t.dev_ptr(gpu)).unzip();
    let c = ffi::kiln_tp_plan {
        paths: pp as *const ffi::kiln_tp_path,
        n_paths: plan.instructions.len() as i32,
        cg_ijk: ip as *const i32,
        cg_val: vp.map_or(std::ptr::null(), |p| p as *const f32),
        cg_val_f64: v64p.map_or(std::ptr::null(), |p| p as *const f64),
        coef_f64: c64p.map_or(std::ptr::null(), |p| p as *const f64),
        // The plan is TpPlan's: wigner_3j tables, widths 2l + 1 (kiln.h).
        wigner_cg: i32::from(!table_kernels()),
        dim1: plan.irreps_in1.dim() as i64,
        dim2: plan.irreps_in2.dim() as i64,
        dim_out: plan.irreps_out.dim() as i64,
        weight_numel: plan.weight_numel as i64,
    };
    f(&c)
}

/// The convolution's layouts of src and dst (i32 `[edges]` on the device, any order; LAYOUT_NAMES'
/// order) and the two status words, built and checked there by kiln_equivariant_graph_build
/// without reading the words back (EdgeGraph::check does).
pub(in crate::families::equivariant) fn build_graph(
    src: &Tensor,
    dst: &Tensor,
    nodes: usize,
    n_edges: usize,
    gpu: &Gpu,
) -> Result<([Tensor; 6], Tensor)> {
    gpu.bind()?;
    let device = gpu.device();
    let i32s = |n: usize| Tensor::uninit(&[n.max(1)], DType::I32, &device);
    let mut out = [i32s(n_edges)?, i32s(n_edges)?, i32s(nodes + 1)?, i32s(n_edges)?, i32s(n_edges)?, i32s(nodes + 1)?];
    let mut status_words = i32s(2)?;
    // SAFETY: a pure size query.
    let bytes = unsafe { ffi::kiln_equivariant_graph_workspace_bytes(nodes as i64, n_edges as i64) };
    let mut workspace = gpu.workspace(bytes)?;
    let status = {
        let (sp, _sg) = src.dev_ptr(gpu);
        let (dp, _dg) = dst.dev_ptr(gpu);
        let (ptrs, _out_guards): (Vec<u64>, Vec<_>) = out.iter_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let o = |i: usize| ptrs[i] as *mut i32;
        let (wp, _wg) = status_words.dev_ptr_mut(gpu);
        let (wsp, _wsg) = workspace.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        // SAFETY: src and dst are i32 [edges] (validated by graph.rs); the layouts, status words
        // and workspace are sized as kiln.h asks; every guard outlives the launch.
        unsafe {
            ffi::kiln_equivariant_graph_build(
                sp as *const i32,
                dp as *const i32,
                nodes as i64,
                n_edges as i64,
                o(0),
                o(1),
                o(2),
                o(3),
                o(4),
                o(5),
                wp as *mut i32,
                wsp.map_or(std::ptr::null_mut(), |p| p as *mut c_void),
                bytes.max(0),
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_equivariant_graph_build".into())?;
    Ok((out, status_words))
}

/// The device pointers of a graph's layouts (LAYOUT_NAMES' order: src, dst, dst_ptr, dst_perm,
/// src_perm, src_ptr; NULL without a graph: the batched product), and the guards that keep
/// them valid for a launch.
fn graph_ptrs<'g>(graph: Option<&GraphView<'g>>, gpu: &'g Gpu) -> ([*const i32; 6], Vec<Guard<'g>>) {
    let Some(GraphView::Device { layouts, .. }) = graph else { return ([std::ptr::null(); 6], Vec::new()) };
    let mut guards = Vec::with_capacity(6);
    let ptrs = layouts.map(|t| {
        let (p, guard) = t.dev_ptr(gpu);
        guards.push(guard);
        p as *const i32
    });
    (ptrs, guards)
}

pub(in crate::families::equivariant) fn conv_forward(plan: &TpPlan, ops: &Operands, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let dev = device_plan(plan, ops.x.dtype(), gpu)?;
    let device = gpu.device();
    let mut out = Tensor::uninit(&[ops.nodes, plan.irreps_out.dim()], ops.x.dtype(), &device)?;
    let status = {
        let (xp, _xg) = ops.x.dev_ptr(gpu);
        let (yp, _yg) = ops.y.dev_ptr(gpu);
        let (wp, _wg) = ops.w.dev_ptr(gpu);
        let ([sp, _, dpp, dperm, _, _], _graph_guards) = graph_ptrs(ops.graph.as_ref(), gpu);
        let (op, _og) = out.dev_ptr_mut(gpu);
        with_plan(plan, &dev, gpu, |c| {
            // SAFETY: operands validated by mod.rs (shapes, dtypes, devices); the graph's layouts
            // come from kiln_equivariant_graph_build, in bounds even after a data error; the
            // plan's buffers and every guard outlive the launch.
            unsafe {
                ffi::kiln_equivariant_conv_fwd(
                    ops.x.dtype().to_ffi(),
                    c,
                    xp as *const c_void,
                    yp as *const c_void,
                    wp as *const c_void,
                    i32::from(ops.shared),
                    sp,
                    dpp,
                    dperm,
                    ops.nodes as i64,
                    ops.edges as i64,
                    op as *mut c_void,
                    gpu.stream(),
                )
            }
        })
    };
    check_status(gpu, status, || "kiln_equivariant_conv_fwd".into())?;
    Ok(out)
}

pub(in crate::families::equivariant) fn conv_backward(plan: &TpPlan, ops: &Operands, dout: &Tensor, gpu: &Gpu) -> Result<Grads> {
    gpu.bind()?;
    let dev = device_plan(plan, ops.x.dtype(), gpu)?;
    let device = gpu.device();
    let dtype = ops.x.dtype();
    let mut dx = Tensor::uninit(ops.x.shape(), dtype, &device)?;
    let mut dy = Tensor::uninit(ops.y.shape(), dtype, &device)?;
    let mut dw = Tensor::uninit(ops.w.shape(), dtype, &device)?;
    let (bytes, mut workspace) = backward_workspace(plan, ops, gpu)?;
    let status = {
        let (xp, _xg) = ops.x.dev_ptr(gpu);
        let (yp, _yg) = ops.y.dev_ptr(gpu);
        let (wp, _wg) = ops.w.dev_ptr(gpu);
        let (gp, _gg) = dout.dev_ptr(gpu);
        let ([sp, tp, dpp, _, pp, spp], _graph_guards) = graph_ptrs(ops.graph.as_ref(), gpu);
        let (dxp, _dxg) = dx.dev_ptr_mut(gpu);
        let (dyp, _dyg) = dy.dev_ptr_mut(gpu);
        let (dwp, _dwg) = dw.dev_ptr_mut(gpu);
        let (wsp, _wsg) = workspace.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        with_plan(plan, &dev, gpu, |c| {
            // SAFETY: as in conv_forward; the workspace holds `bytes` bytes.
            unsafe {
                ffi::kiln_equivariant_conv_bwd(
                    dtype.to_ffi(),
                    c,
                    xp as *const c_void,
                    yp as *const c_void,
                    wp as *const c_void,
                    i32::from(ops.shared),
                    sp,
                    tp,
                    dpp,
                    pp,
                    spp,
                    gp as *const c_void,
                    ops.nodes as i64,
                    ops.edges as i64,
                    dxp as *mut c_void,
                    dyp as *mut c_void,
                    dwp as *mut c_void,
                    wsp.map_or(std::ptr::null_mut(), |p| p as *mut c_void),
                    bytes.max(0),
                    gpu.stream(),
                )
            }
        })
    };
    check_status(gpu, status, || "kiln_equivariant_conv_bwd".into())?;
    Ok(Grads { dx1: dx, dx2: dy, dw })
}

pub(in crate::families::equivariant) fn conv_double_backward(
    plan: &TpPlan,
    ops: &Operands,
    dout: &Tensor,
    up: UpstreamGrads,
    gpu: &Gpu,
) -> Result<DoubleGrads> {
    gpu.bind()?;
    let dev = device_plan(plan, ops.x.dtype(), gpu)?;
    let device = gpu.device();
    let dtype = ops.x.dtype();
    let mut gx = Tensor::uninit(ops.x.shape(), dtype, &device)?;
    let mut gy = Tensor::uninit(ops.y.shape(), dtype, &device)?;
    let mut gw = Tensor::uninit(ops.w.shape(), dtype, &device)?;
    let mut gdout = Tensor::uninit(dout.shape(), dtype, &device)?;
    let (bytes, mut workspace) = backward_workspace(plan, ops, gpu)?;
    let status = {
        let (xp, _xg) = ops.x.dev_ptr(gpu);
        let (yp, _yg) = ops.y.dev_ptr(gpu);
        let (wp, _wg) = ops.w.dev_ptr(gpu);
        let (gp, _gg) = dout.dev_ptr(gpu);
        let (gdxp, _gdxg) = up.gdx1.map(|t| t.dev_ptr(gpu)).unzip();
        let (gdyp, _gdyg) = up.gdx2.map(|t| t.dev_ptr(gpu)).unzip();
        let (gdwp, _gdwg) = up.gdw.map(|t| t.dev_ptr(gpu)).unzip();
        let ([sp, tp, dpp, dperm, pp, spp], _graph_guards) = graph_ptrs(ops.graph.as_ref(), gpu);
        let (gxp, _gxg) = gx.dev_ptr_mut(gpu);
        let (gyp, _gyg) = gy.dev_ptr_mut(gpu);
        let (gwp, _gwg) = gw.dev_ptr_mut(gpu);
        let (gop, _gog) = gdout.dev_ptr_mut(gpu);
        let (wsp, _wsg) = workspace.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let opt = |p: Option<u64>| p.map_or(std::ptr::null(), |p| p as *const c_void);
        with_plan(plan, &dev, gpu, |c| {
            // SAFETY: as in conv_backward; the upstream gradients are validated like the
            // operands they stand in for (NULL where not given: zeros).
            unsafe {
                ffi::kiln_equivariant_conv_bwd2(
                    dtype.to_ffi(),
                    c,
                    xp as *const c_void,
                    yp as *const c_void,
                    wp as *const c_void,
                    i32::from(ops.shared),
                    sp,
                    tp,
                    dpp,
                    dperm,
                    pp,
                    spp,
                    gp as *const c_void,
                    opt(gdxp),
                    opt(gdyp),
                    opt(gdwp),
                    ops.nodes as i64,
                    ops.edges as i64,
                    gxp as *mut c_void,
                    gyp as *mut c_void,
                    gwp as *mut c_void,
                    gop as *mut c_void,
                    wsp.map_or(std::ptr::null_mut(), |p| p as *mut c_void),
                    bytes.max(0),
                    gpu.stream(),
                )
            }
        })
    };
    check_status(gpu, status, || "kiln_equivariant_conv_bwd2".into())?;
    Ok(DoubleGrads { gx1: gx, gx2: gy, gw, gdout })
}

/// The workspace the backward and double backward launchers ask for (shared-weight partial
/// sums), and its size in bytes.
fn backward_workspace(plan: &TpPlan, ops: &Operands, gpu: &Gpu) -> Result<(i64, Option<Tensor>)> {
    // SAFETY: a pure size query.
    let bytes = unsafe {
        ffi::kiln_equivariant_workspace_bytes_for(
            ops.x.dtype().to_ffi(),
            ops.edges as i64,
            plan.weight_numel as i64,
            i32::from(ops.shared),
        )
    };
    Ok((bytes, gpu.workspace(bytes)?))
}

/// An i32 buffer on the device, padded by one unread element (never empty).
fn upload_i32(v: &[i32], gpu: &Gpu) -> Result<Tensor> {
    let mut padded = v.to_vec();
    padded.push(0);
    let n = padded.len();
    Tensor::from_vec(padded, &[n])?.to_device(&gpu.device())
}

pub(in crate::families::equivariant) fn hessian_forward(ops: &HessianOperands, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let [perm, ptr, mol, first, offset] = ops.layout();
    let bufs: Vec<Tensor> =
        [&ops.dst, &perm, &ptr, &mol, &first, &offset].iter().map(|v| upload_i32(v, gpu)).collect::<Result<_>>()?;
    let mut h = Tensor::uninit(&ops.shape, ops.node_feat.dtype(), &gpu.device())?;
    let status = {
        let (ep, _eg) = ops.edge_feat.dev_ptr(gpu);
        let (np, _ng) = ops.node_feat.dev_ptr(gpu);
        let ptrs: Vec<_> = bufs.iter().map(|t| t.dev_ptr(gpu)).collect();
        let (hp, _hg) = h.dev_ptr_mut(gpu);
        // SAFETY: operands validated by mod.rs (shapes, dtypes, indices, one molecule per
        // edge); the index buffers and every guard outlive the launch.
        unsafe {
            ffi::kiln_equivariant_hessian_fwd(
                ops.node_feat.dtype().to_ffi(),
                ep as *const c_void,
                np as *const c_void,
                ptrs[0].0 as *const i32,
                ptrs[1].0 as *const i32,
                ptrs[2].0 as *const i32,
                ptrs[3].0 as *const i32,
                ptrs[4].0 as *const i32,
                ptrs[5].0 as *const i64,
                ops.atoms as i64,
                ops.src.len() as i64,
                ops.n_atoms.len() as i64,
                hp as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_equivariant_hessian_fwd".into())?;
    Ok(h)
}

pub(in crate::families::equivariant) fn hessian_backward(
    ops: &HessianOperands,
    dhessian: &Tensor,
    gpu: &Gpu,
) -> Result<(Tensor, Tensor)> {
    gpu.bind()?;
    let [_, _, mol, first, offset] = ops.layout();
    let bufs: Vec<Tensor> =
        [&ops.src, &ops.dst, &mol, &first, &offset].iter().map(|v| upload_i32(v, gpu)).collect::<Result<_>>()?;
    let dtype = ops.node_feat.dtype();
    let mut de = Tensor::uninit(ops.edge_feat.shape(), dtype, &gpu.device())?;
    let mut dn = Tensor::uninit(ops.node_feat.shape(), dtype, &gpu.device())?;
    let status = {
        let (gp, _gg) = dhessian.dev_ptr(gpu);
        let ptrs: Vec<_> = bufs.iter().map(|t| t.dev_ptr(gpu)).collect();
        let (ep, _eg) = de.dev_ptr_mut(gpu);
        let (np, _ng) = dn.dev_ptr_mut(gpu);
        // SAFETY: as in hessian_forward.
        unsafe {
            ffi::kiln_equivariant_hessian_bwd(
                dtype.to_ffi(),
                gp as *const c_void,
                ptrs[0].0 as *const i32,
                ptrs[1].0 as *const i32,
                ptrs[2].0 as *const i32,
                ptrs[3].0 as *const i32,
                ptrs[4].0 as *const i64,
                ops.atoms as i64,
                ops.src.len() as i64,
                ops.n_atoms.len() as i64,
                ep as *mut c_void,
                np as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_equivariant_hessian_bwd".into())?;
    Ok((de, dn))
}
