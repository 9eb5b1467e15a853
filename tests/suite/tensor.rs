//! Tensors and devices: construction, rounding, shapes, host/device and emulator round trips,
//! and wrapping a framework's device buffer without a copy.

use half::{bf16, f16};
use kiln::{DType, Device, Error, Tensor};

#[test]
fn values_round_to_the_storage_dtype() {
    let v = [1.0 + 1.0 / 1024.0, -3.3, 65504.0];
    let t = Tensor::from_f64(&v, &[3], DType::BF16).unwrap();
    assert_eq!(t.to_f64_vec().unwrap(), v.iter().map(|&x| DType::BF16.round(x)).collect::<Vec<_>>());
    assert_eq!(t.to_f64_vec().unwrap()[0], 1.0, "bf16 keeps 8 significant bits");
    let h = Tensor::from_f64(&v, &[3], DType::F16).unwrap();
    assert_eq!(h.to_f64_vec().unwrap()[0], 1.0 + 1.0 / 1024.0, "f16 keeps 11");
    assert_eq!(DType::F16.round(1e6), f64::INFINITY);
}

#[test]
fn shapes_must_match_lengths() {
    let e = Tensor::from_f32(&[1.0, 2.0, 3.0], &[2, 2], DType::F32).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "values", .. }), "{e}");
    let e = Tensor::zeros(&[usize::MAX, 3], DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let t = Tensor::from_vec(vec![f16::ONE; 6], &[2, 3]).unwrap();
    assert_eq!((t.dtype(), t.len(), t.is_empty()), (DType::F16, 6, false));
    let t = t.reshape(&[3, 2]).unwrap();
    assert_eq!(t.shape(), &[3, 2]);
    assert!(matches!(t.reshape(&[4]), Err(Error::Shape { arg: "shape", .. })));
}

#[test]
fn dtype_names_parse_back() {
    for d in DType::ALL {
        assert_eq!(DType::parse(d.name()), Some(d));
        assert_eq!(format!("{d:<5}|"), format!("{:<5}|", d.name()));
    }
    assert_eq!(DType::parse("f64"), Some(DType::F64));
    assert_eq!(DType::parse("f8"), None);
    assert_eq!((DType::F64.size_in_bytes(), DType::F64.unit_roundoff()), (8, 2f64.powi(-53)));
    assert!(!DType::F64.is_float() && DType::F64.is_floating() && !DType::FLOATS.contains(&DType::F64));
}

#[test]
fn device_round_trip_and_wrapping_without_copy() {
    let device = match Device::cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let Device::Cuda(cuda) = &device else { unreachable!("Device::cuda returns a CUDA device") };
    // Two handles on device 0 are the same memory (one primary context), and the host is not.
    assert!(device.same_memory(&Device::cuda(0).unwrap()));
    assert!(!device.same_memory(&Device::Cpu));
    let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let t = Tensor::from_f32(&values, &[10, 100], DType::BF16).unwrap().to_device(&device).unwrap();
    assert!(t.device().is_cuda());
    let back = t.to_f64_vec().unwrap();
    assert_eq!(back, values.iter().map(|&v| DType::BF16.round(v as f64)).collect::<Vec<_>>());

    let slice = cuda.stream().clone_htod(&vec![bf16::from_f32(2.5); 64]).unwrap();
    let before = {
        use kiln::cudarc::driver::DevicePtr;
        slice.device_ptr(cuda.stream()).0
    };
    let wrapped = Tensor::from_cuda_slice(slice, &[8, 8]).unwrap();
    let after = {
        use kiln::cudarc::driver::DevicePtr;
        wrapped.as_cuda_slice::<bf16>().unwrap().device_ptr(cuda.stream()).0
    };
    assert_eq!(before, after, "wrapping copied the buffer");
    assert!(wrapped.as_cuda_slice::<f32>().is_none());
    assert_eq!(wrapped.to_f32_vec().unwrap(), vec![2.5; 64]);
}

#[test]
fn emulator_round_trip_zeros_and_memory_space() {
    let Some(emu) = crate::common::emu() else { return };
    assert!(emu.is_emu() && emu.runs_kernels() && !emu.is_cuda());
    assert_eq!(emu.to_string(), "emu");
    assert!(emu.same_memory(&Device::emu().unwrap()), "every emulator handle shares one memory");
    assert!(!emu.same_memory(&Device::Cpu) && !Device::Cpu.same_memory(&emu));
    emu.synchronize().unwrap();

    let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    for dtype in DType::FLOATS {
        let t = Tensor::from_f32(&values, &[10, 100], dtype).unwrap().to_device(&emu).unwrap();
        assert!(t.device().is_emu());
        assert_eq!((t.dtype(), t.shape()), (dtype, &[10usize, 100][..]));
        let want: Vec<f64> = values.iter().map(|&v| dtype.round(v as f64)).collect();
        assert_eq!(t.to_f64_vec().unwrap(), want, "{dtype} round trip");
        assert_eq!(t.to_device(&Device::Cpu).unwrap().to_f64_vec().unwrap(), want);
    }
    let ints = Tensor::from_vec(vec![-3i32, 0, 7, i32::MAX], &[4]).unwrap().to_device(&emu).unwrap();
    assert_eq!(ints.to_f64_vec().unwrap(), vec![-3.0, 0.0, 7.0, i32::MAX as f64]);
    let bytes = Tensor::from_vec(vec![0u8, 1, 255], &[3]).unwrap().to_device(&emu).unwrap();
    assert_eq!(bytes.to_f64_vec().unwrap(), vec![0.0, 1.0, 255.0]);

    let z = Tensor::zeros(&[3, 5], DType::BF16, &emu).unwrap();
    assert_eq!(z.to_f32_vec().unwrap(), vec![0.0; 15]);
    let empty = Tensor::from_f32(&[], &[0, 4], DType::F16).unwrap().to_device(&emu).unwrap();
    assert_eq!((empty.shape(), empty.to_f32_vec().unwrap().len()), (&[0usize, 4][..], 0));
    assert!(z.as_cuda_slice::<bf16>().is_none(), "emulated memory is not a CUDA buffer");

    let Device::Emu(handle) = &emu else { unreachable!("Device::emu returns the emulator") };
    let launches = handle.launch_count();
    kiln::activation::forward(&kiln::activation::Activation::Relu, &z).unwrap();
    assert!(handle.launch_count() > launches, "the op ran in the emulator");
}
