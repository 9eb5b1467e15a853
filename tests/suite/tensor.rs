//! Tensors and devices: construction, rounding, shapes, host/device round trips, and
//! wrapping a framework's device buffer without a copy.

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
    assert_eq!(DType::parse("f64"), None);
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
