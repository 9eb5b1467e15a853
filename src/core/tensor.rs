//! `Tensor`: a contiguous, row-major array of f32/f16/bf16/f64 (or i32/u8 for indices and
//! masks) on the host, on a CUDA device, or in the CUDA emulator's memory.

use std::fmt;

use cudarc::driver::CudaSlice;
use half::{bf16, f16};

use crate::core::device::{CudaDevice, Device, EmuDevice};
use crate::core::dtype::DType;
use crate::core::emu::EmuBuffer;
use crate::core::error::{Error, Result};
use crate::core::gpu::{Gpu, Guard};

/// A contiguous, row-major tensor. Host tensors run CPU references; device tensors run
/// kernels on their device's stream.
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

enum Data {
    Host(HostData),
    Cuda {
        buf: CudaData,
        device: CudaDevice,
    },
    /// Untyped emulated memory: the dtype is kept beside it.
    Emu {
        buf: EmuBuffer,
        dtype: DType,
        device: EmuDevice,
    },
}

enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

enum CudaData {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    BF16(CudaSlice<bf16>),
    F64(CudaSlice<f64>),
    I32(CudaSlice<i32>),
    U8(CudaSlice<u8>),
}

/// The element types a tensor can hold. Sealed: f32, `half::f16`, `half::bf16`, f64, i32, u8.
pub trait Element: Copy + Send + Sync + cudarc::driver::DeviceRepr + sealed::Sealed + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f64 {}
    impl Sealed for i32 {}
    impl Sealed for u8 {}
}

/// Elements to allocate on a device for `n`: zero-byte allocations are not portable across
/// drivers, so an empty tensor gets one unused element (its shape still says empty).
fn device_len(n: usize) -> usize {
    n.max(1)
}

fn truncated<T>(mut v: Vec<T>, n: usize) -> Vec<T> {
    v.truncate(n);
    v
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl HostData {
    fn from_f64(values: &[f64], dtype: DType) -> HostData {
        match dtype {
            DType::F32 => HostData::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F16 => HostData::F16(values.iter().map(|&v| f16::from_f64(v)).collect()),
            DType::BF16 => HostData::BF16(values.iter().map(|&v| bf16::from_f64(v)).collect()),
            DType::F64 => HostData::F64(values.to_vec()),
            DType::I32 => HostData::I32(values.iter().map(|&v| v.round() as i32).collect()),
            DType::U8 => HostData::U8(values.iter().map(|&v| v.round() as u8).collect()),
        }
    }

    /// The elements' bytes (what an upload copies).
    fn as_bytes(&self) -> &[u8] {
        match self {
            HostData::F32(v) => bytemuck::cast_slice(v),
            HostData::F16(v) => bytemuck::cast_slice(v),
            HostData::BF16(v) => bytemuck::cast_slice(v),
            HostData::F64(v) => bytemuck::cast_slice(v),
            HostData::I32(v) => bytemuck::cast_slice(v),
            HostData::U8(v) => v,
        }
    }

    /// The first `n` elements of `dtype` of an emulated buffer.
    fn download(buf: &EmuBuffer, dtype: DType, n: usize) -> Result<HostData> {
        fn read<T: bytemuck::Pod>(buf: &EmuBuffer, n: usize) -> Result<Vec<T>> {
            let mut v = vec![T::zeroed(); n];
            buf.read(0, bytemuck::cast_slice_mut(&mut v))?;
            Ok(v)
        }
        Ok(match dtype {
            DType::F32 => HostData::F32(read(buf, n)?),
            DType::F16 => HostData::F16(read(buf, n)?),
            DType::BF16 => HostData::BF16(read(buf, n)?),
            DType::F64 => HostData::F64(read(buf, n)?),
            DType::I32 => HostData::I32(read(buf, n)?),
            DType::U8 => HostData::U8(read(buf, n)?),
        })
    }

    fn to_f64(&self) -> Vec<f64> {
        match self {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            HostData::F64(v) => v.clone(),
            HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

impl Tensor {
    /// A host tensor holding `values` rounded to `dtype`.
    pub fn from_f64(values: &[f64], shape: &[usize], dtype: DType) -> Result<Tensor> {
        check_len("values", values.len(), shape)?;
        Ok(Tensor { shape: shape.to_vec(), data: Data::Host(HostData::from_f64(values, dtype)) })
    }

    /// A host tensor holding `values` rounded to `dtype`.
    pub fn from_f32(values: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        Tensor::from_f64(&wide, shape, dtype)
    }

    /// A host tensor that takes ownership of `values`.
    pub fn from_vec<T: Element>(values: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        check_len("values", values.len(), shape)?;
        // The sealed trait leaves exactly the dtypes' types; dispatch on the dtype.
        let any: Box<dyn std::any::Any> = Box::new(values);
        let data = match T::DTYPE {
            DType::F32 => HostData::F32(*any.downcast::<Vec<f32>>().expect("f32")),
            DType::F16 => HostData::F16(*any.downcast::<Vec<f16>>().expect("f16")),
            DType::BF16 => HostData::BF16(*any.downcast::<Vec<bf16>>().expect("bf16")),
            DType::F64 => HostData::F64(*any.downcast::<Vec<f64>>().expect("f64")),
            DType::I32 => HostData::I32(*any.downcast::<Vec<i32>>().expect("i32")),
            DType::U8 => HostData::U8(*any.downcast::<Vec<u8>>().expect("u8")),
        };
        Ok(Tensor { shape: shape.to_vec(), data: Data::Host(data) })
    }

    /// A tensor of `shape` filled with `value` on `device`.
    pub fn full(shape: &[usize], dtype: DType, value: f64, device: &Device) -> Result<Tensor> {
        let n = numel(shape).ok_or_else(|| shape_overflow("shape", shape))?;
        Tensor::from_f64(&vec![value; n], shape, dtype)?.to_device(device)
    }

    /// Wraps an existing device buffer without copying (for frameworks that own memory).
    /// The tensor launches on the slice's stream.
    pub fn from_cuda_slice<T: Element>(slice: CudaSlice<T>, shape: &[usize]) -> Result<Tensor> {
        check_len("slice", slice.len(), shape)?;
        let device = CudaDevice::from_stream(slice.stream().clone());
        let any: Box<dyn std::any::Any> = Box::new(slice);
        let buf = match T::DTYPE {
            DType::F32 => CudaData::F32(*any.downcast::<CudaSlice<f32>>().expect("f32")),
            DType::F16 => CudaData::F16(*any.downcast::<CudaSlice<f16>>().expect("f16")),
            DType::BF16 => CudaData::BF16(*any.downcast::<CudaSlice<bf16>>().expect("bf16")),
            DType::F64 => CudaData::F64(*any.downcast::<CudaSlice<f64>>().expect("f64")),
            DType::I32 => CudaData::I32(*any.downcast::<CudaSlice<i32>>().expect("i32")),
            DType::U8 => CudaData::U8(*any.downcast::<CudaSlice<u8>>().expect("u8")),
        };
        Ok(Tensor { shape: shape.to_vec(), data: Data::Cuda { buf, device } })
    }

    /// The device buffer, when this is a device tensor of element type `T`.
    pub fn as_cuda_slice<T: Element>(&self) -> Option<&CudaSlice<T>> {
        let any: &dyn std::any::Any = match &self.data {
            Data::Cuda { buf: CudaData::F32(s), .. } => s,
            Data::Cuda { buf: CudaData::F16(s), .. } => s,
            Data::Cuda { buf: CudaData::BF16(s), .. } => s,
            Data::Cuda { buf: CudaData::F64(s), .. } => s,
            Data::Cuda { buf: CudaData::I32(s), .. } => s,
            Data::Cuda { buf: CudaData::U8(s), .. } => s,
            Data::Host(_) | Data::Emu { .. } => return None,
        };
        any.downcast_ref::<CudaSlice<T>>()
    }

    /// The device buffer for writing, when this is a device tensor of element type `T`.
    pub fn as_cuda_slice_mut<T: Element>(&mut self) -> Option<&mut CudaSlice<T>> {
        let any: &mut dyn std::any::Any = match &mut self.data {
            Data::Cuda { buf: CudaData::F32(s), .. } => s,
            Data::Cuda { buf: CudaData::F16(s), .. } => s,
            Data::Cuda { buf: CudaData::BF16(s), .. } => s,
            Data::Cuda { buf: CudaData::F64(s), .. } => s,
            Data::Cuda { buf: CudaData::I32(s), .. } => s,
            Data::Cuda { buf: CudaData::U8(s), .. } => s,
            Data::Host(_) | Data::Emu { .. } => return None,
        };
        any.downcast_mut::<CudaSlice<T>>()
    }

    /// The shape (row-major, contiguous).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage dtype.
    pub fn dtype(&self) -> DType {
        match &self.data {
            Data::Host(HostData::F32(_)) | Data::Cuda { buf: CudaData::F32(_), .. } => DType::F32,
            Data::Host(HostData::F16(_)) | Data::Cuda { buf: CudaData::F16(_), .. } => DType::F16,
            Data::Host(HostData::BF16(_)) | Data::Cuda { buf: CudaData::BF16(_), .. } => DType::BF16,
            Data::Host(HostData::F64(_)) | Data::Cuda { buf: CudaData::F64(_), .. } => DType::F64,
            Data::Host(HostData::I32(_)) | Data::Cuda { buf: CudaData::I32(_), .. } => DType::I32,
            Data::Host(HostData::U8(_)) | Data::Cuda { buf: CudaData::U8(_), .. } => DType::U8,
            Data::Emu { dtype, .. } => *dtype,
        }
    }

    /// The device the data lives on.
    pub fn device(&self) -> Device {
        match &self.data {
            Data::Host(_) => Device::Cpu,
            Data::Cuda { device, .. } => Device::Cuda(device.clone()),
            Data::Emu { device, .. } => Device::Emu(device.clone()),
        }
    }

    /// A copy of the values widened to f64 (waits for the device when there is one).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.to_host()?.host().to_f64())
    }

    /// A copy of the values as f32 (waits for the device when there is one).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(self.to_f64_vec()?.into_iter().map(|v| v as f32).collect())
    }

    /// The same tensor reinterpreted with another shape of the same length.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        check_len("shape", self.len(), shape)?;
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// A copy of this tensor on `device` (a host copy when `device` is the CPU).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => self.to_host(),
            Device::Cuda(_) if self.is_empty() => Tensor::zeros(&self.shape, self.dtype(), device),
            Device::Cuda(d) => {
                let s = d.stream();
                let buf = match self.to_host()?.host() {
                    HostData::F32(v) => CudaData::F32(s.clone_htod(v)?),
                    HostData::F16(v) => CudaData::F16(s.clone_htod(v)?),
                    HostData::BF16(v) => CudaData::BF16(s.clone_htod(v)?),
                    HostData::F64(v) => CudaData::F64(s.clone_htod(v)?),
                    HostData::I32(v) => CudaData::I32(s.clone_htod(v)?),
                    HostData::U8(v) => CudaData::U8(s.clone_htod(v)?),
                };
                Ok(Tensor { shape: self.shape.clone(), data: Data::Cuda { buf, device: d.clone() } })
            }
            Device::Emu(_) if self.is_empty() => Tensor::zeros(&self.shape, self.dtype(), device),
            Device::Emu(d) => {
                let dtype = self.dtype();
                let host = self.to_host()?;
                let bytes = host.host().as_bytes();
                let mut buf = EmuBuffer::uninit(bytes.len())?;
                buf.write(0, bytes)?;
                Ok(Tensor { shape: self.shape.clone(), data: Data::Emu { buf, dtype, device: d.clone() } })
            }
        }
    }

    fn to_host(&self) -> Result<Tensor> {
        let data = match &self.data {
            Data::Host(HostData::F32(v)) => HostData::F32(v.clone()),
            Data::Host(HostData::F16(v)) => HostData::F16(v.clone()),
            Data::Host(HostData::BF16(v)) => HostData::BF16(v.clone()),
            Data::Host(HostData::F64(v)) => HostData::F64(v.clone()),
            Data::Host(HostData::I32(v)) => HostData::I32(v.clone()),
            Data::Host(HostData::U8(v)) => HostData::U8(v.clone()),
            Data::Cuda { buf, device } => {
                let s = device.stream();
                // An empty tensor's buffer holds one unused element (device_len).
                let n = self.len();
                match buf {
                    CudaData::F32(b) => HostData::F32(truncated(s.clone_dtoh(b)?, n)),
                    CudaData::F16(b) => HostData::F16(truncated(s.clone_dtoh(b)?, n)),
                    CudaData::BF16(b) => HostData::BF16(truncated(s.clone_dtoh(b)?, n)),
                    CudaData::F64(b) => HostData::F64(truncated(s.clone_dtoh(b)?, n)),
                    CudaData::I32(b) => HostData::I32(truncated(s.clone_dtoh(b)?, n)),
                    CudaData::U8(b) => HostData::U8(truncated(s.clone_dtoh(b)?, n)),
                }
            }
            Data::Emu { buf, dtype, .. } => HostData::download(buf, *dtype, self.len())?,
        };
        Ok(Tensor { shape: self.shape.clone(), data: Data::Host(data) })
    }

    fn host(&self) -> &HostData {
        match &self.data {
            Data::Host(h) => h,
            Data::Cuda { .. } | Data::Emu { .. } => unreachable!("to_host returns host tensors"),
        }
    }

    /// Values of a host tensor widened to f64 (the CPU references' input).
    pub(crate) fn host_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::Host(h) => h.to_f64(),
            Data::Cuda { .. } | Data::Emu { .. } => unreachable!("CPU path called on a device tensor"),
        }
    }

    /// Overwrites a host tensor with `values` rounded to its dtype.
    pub(crate) fn set_host_f64(&mut self, values: &[f64]) {
        debug_assert_eq!(values.len(), self.len());
        let dtype = self.dtype();
        match &mut self.data {
            Data::Host(h) => *h = HostData::from_f64(values, dtype),
            Data::Cuda { .. } | Data::Emu { .. } => unreachable!("CPU path called on a device tensor"),
        }
    }

    /// A tensor on `device` whose contents are unspecified until written: for outputs a
    /// kernel writes in full (a host tensor is zero-filled; an emulated one stays unwritten, so
    /// checked mode reports a kernel that reads it before writing it).
    pub(crate) fn uninit(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = numel(shape).ok_or_else(|| shape_overflow("shape", shape))?;
        match device {
            Device::Cpu => Tensor::zeros(shape, dtype, device),
            Device::Cuda(d) => {
                let s = d.stream();
                // SAFETY: the elements are plain data; every reader either follows a kernel
                // that wrote them or is documented to see unspecified values.
                let buf = unsafe {
                    match dtype {
                        DType::F32 => CudaData::F32(s.alloc(device_len(n))?),
                        DType::F16 => CudaData::F16(s.alloc(device_len(n))?),
                        DType::BF16 => CudaData::BF16(s.alloc(device_len(n))?),
                        DType::F64 => CudaData::F64(s.alloc(device_len(n))?),
                        DType::I32 => CudaData::I32(s.alloc(device_len(n))?),
                        DType::U8 => CudaData::U8(s.alloc(device_len(n))?),
                    }
                };
                Ok(Tensor { shape: shape.to_vec(), data: Data::Cuda { buf, device: d.clone() } })
            }
            Device::Emu(d) => {
                let buf = EmuBuffer::uninit(emu_bytes(n, dtype, shape)?)?;
                Ok(Tensor { shape: shape.to_vec(), data: Data::Emu { buf, dtype, device: d.clone() } })
            }
        }
    }

    /// A zero-filled tensor on `device`.
    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = numel(shape).ok_or_else(|| shape_overflow("shape", shape))?;
        match device {
            Device::Cpu => Tensor::from_f64(&vec![0.0; n], shape, dtype),
            Device::Cuda(d) => {
                let s = d.stream();
                let buf = match dtype {
                    DType::F32 => CudaData::F32(s.alloc_zeros(device_len(n))?),
                    DType::F16 => CudaData::F16(s.alloc_zeros(device_len(n))?),
                    DType::BF16 => CudaData::BF16(s.alloc_zeros(device_len(n))?),
                    DType::F64 => CudaData::F64(s.alloc_zeros(device_len(n))?),
                    DType::I32 => CudaData::I32(s.alloc_zeros(device_len(n))?),
                    DType::U8 => CudaData::U8(s.alloc_zeros(device_len(n))?),
                };
                Ok(Tensor { shape: shape.to_vec(), data: Data::Cuda { buf, device: d.clone() } })
            }
            Device::Emu(d) => {
                let buf = EmuBuffer::zeroed(emu_bytes(n, dtype, shape)?)?;
                Ok(Tensor { shape: shape.to_vec(), data: Data::Emu { buf, dtype, device: d.clone() } })
            }
        }
    }

    /// The address a kernel launched on `gpu` reads, with the guard that must outlive the
    /// launch (cudarc's stream synchronisation on CUDA; nothing on the emulator).
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn dev_ptr<'a>(&'a self, gpu: &'a Gpu) -> (u64, Guard<'a>) {
        match (&self.data, gpu) {
            #[cfg(feature = "cuda")]
            (Data::Cuda { buf, .. }, Gpu::Cuda(d)) => {
                use cudarc::driver::DevicePtr;
                let s = d.stream();
                let (p, g) = match buf {
                    CudaData::F32(b) => b.device_ptr(s),
                    CudaData::F16(b) => b.device_ptr(s),
                    CudaData::BF16(b) => b.device_ptr(s),
                    CudaData::F64(b) => b.device_ptr(s),
                    CudaData::I32(b) => b.device_ptr(s),
                    CudaData::U8(b) => b.device_ptr(s),
                };
                (p, Guard::cuda(g))
            }
            #[cfg(feature = "emu")]
            (Data::Emu { buf, .. }, Gpu::Emu(_)) => (buf.addr(), Guard::none()),
            _ => unreachable!("validated: launch code got a tensor that is not on {}", gpu.device()),
        }
    }

    /// The address a kernel launched on `gpu` writes, with the guard that must outlive the
    /// launch.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn dev_ptr_mut<'a>(&'a mut self, gpu: &'a Gpu) -> (u64, Guard<'a>) {
        match (&mut self.data, gpu) {
            #[cfg(feature = "cuda")]
            (Data::Cuda { buf, .. }, Gpu::Cuda(d)) => {
                use cudarc::driver::DevicePtrMut;
                let s = d.stream();
                let (p, g) = match buf {
                    CudaData::F32(b) => b.device_ptr_mut(s),
                    CudaData::F16(b) => b.device_ptr_mut(s),
                    CudaData::BF16(b) => b.device_ptr_mut(s),
                    CudaData::F64(b) => b.device_ptr_mut(s),
                    CudaData::I32(b) => b.device_ptr_mut(s),
                    CudaData::U8(b) => b.device_ptr_mut(s),
                };
                (p, Guard::cuda(g))
            }
            #[cfg(feature = "emu")]
            (Data::Emu { buf, .. }, Gpu::Emu(_)) => (buf.addr(), Guard::none()),
            _ => unreachable!("validated: launch code got a tensor that is not on {}", gpu.device()),
        }
    }

    /// Copies elements `src_start..src_start + len` of `src` over elements `start..start + len`
    /// of this tensor, on the device both live on (same dtype and memory; the caller checks).
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn copy_region(&mut self, start: usize, src: &Tensor, src_start: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let size = self.dtype().size_in_bytes();
        match (&mut self.data, &src.data) {
            (Data::Emu { buf, .. }, Data::Emu { buf: from, .. }) => {
                buf.copy_region(start * size, from, src_start * size, len * size)
            }
            (Data::Cuda { buf, device }, Data::Cuda { buf: from, .. }) => {
                let s = device.stream();
                macro_rules! copy {
                    ($($v:ident),*) => {
                        match (buf, from) {
                            $((CudaData::$v(d), CudaData::$v(f)) => s.memcpy_dtod(
                                &f.slice(src_start..src_start + len),
                                &mut d.slice_mut(start..start + len),
                            )?,)*
                            _ => unreachable!("copy_region: tensors of one dtype"),
                        }
                    };
                }
                copy!(F32, F16, BF16, F64, I32, U8);
                Ok(())
            }
            _ => unreachable!("copy_region: two tensors in one device memory"),
        }
    }

    /// Writes `values`, rounded to the dtype, over elements `start..start + values.len()` of an
    /// emulated tensor, marking them written (the host GEMMs of the GLU MLP block on the
    /// emulator).
    #[cfg_attr(not(feature = "emu"), allow(dead_code))]
    pub(crate) fn emu_write_f64(&mut self, start: usize, values: &[f64]) -> Result<()> {
        let dtype = self.dtype();
        let Data::Emu { buf, .. } = &mut self.data else {
            unreachable!("emu_write_f64 called on a tensor on {}", self.device())
        };
        let size = dtype.size_in_bytes();
        buf.write(start * size, HostData::from_f64(values, dtype).as_bytes())
    }
}

/// Bytes of an emulated buffer for `n` elements of `dtype` (see `device_len`).
fn emu_bytes(n: usize, dtype: DType, shape: &[usize]) -> Result<usize> {
    device_len(n).checked_mul(dtype.size_in_bytes()).ok_or_else(|| shape_overflow("shape", shape))
}

fn shape_overflow(arg: &'static str, shape: &[usize]) -> Error {
    Error::Shape { arg, expected: "a shape whose element count fits in usize".into(), got: shape.to_vec() }
}

fn check_len(arg: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    match numel(shape) {
        Some(n) if n == len => Ok(()),
        _ => Err(Error::Shape { arg, expected: format!("{len} elements in all"), got: shape.to_vec() }),
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {}, {})", self.shape, self.dtype(), self.device())
    }
}
