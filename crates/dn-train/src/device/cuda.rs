//! CUDA at run time (a CUDA build of dn loads its libraries when it needs them, so it starts, serves
//! and trains on the CPU without them): the probe over the real libraries and driver, and what dn sets
//! on each CUDA device it creates (no per-allocation events, a memory pool that keeps what it mapped).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::path::PathBuf;

use candle_core::Device;
use candle_core::cuda::cudarc::driver::{result, sys};
use libloading::Library;

use super::probe::{CudaLibrary, CudaReport, DRIVER, GpuInfo, LIBRARIES, find_library};

/// Opens `file` and finds where `symbol` lives: the file the name resolved to.
fn open(file: &str, symbol: &str) -> Result<(Library, PathBuf), String> {
    // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions.
    let lib = unsafe { Library::new(file) }.map_err(|e| {
        // libloading's own text is "dlopen failed"; dlerror()'s is its source.
        std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
    })?;
    let name = format!("{symbol}\0");
    // SAFETY: the symbol's address is only read, never called.
    let address = unsafe { lib.get::<*const c_void>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| format!("{file} has no {symbol} ({e})"))?;
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the loader's tables for an address inside a loaded object.
    let path = if unsafe { libc::dladdr(address, &mut info) } != 0 && !info.dli_fname.is_null() {
        // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
        let found = PathBuf::from(
            unsafe { CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .into_owned(),
        );
        // The versioned file behind the soname's link.
        std::fs::canonicalize(&found).unwrap_or(found)
    } else {
        PathBuf::from(file)
    };
    Ok((lib, path))
}

/// [`find_library`] with dlopen; the library that loaded stays open (candle opens it again).
fn load(library: &CudaLibrary) -> (super::probe::LibraryStatus, Option<Library>) {
    let mut opened = None;
    let status = find_library(library, &mut |file| {
        let (lib, path) = open(file, library.symbol)?;
        opened = Some(lib);
        Ok(path)
    });
    (status, opened)
}

/// The driver's name for a `CUresult`.
fn error_name(driver: &Library, code: c_int) -> String {
    // SAFETY: `cuGetErrorName(CUresult, const char**)` as the CUDA driver API declares it.
    unsafe {
        let Ok(f) = driver
            .get::<unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int>(b"cuGetErrorName\0")
        else {
            return format!("CUDA error {code}");
        };
        let mut name: *const c_char = std::ptr::null();
        if f(code, &mut name) != 0 || name.is_null() {
            return format!("CUDA error {code}");
        }
        format!("{} ({code})", CStr::from_ptr(name).to_string_lossy())
    }
}

/// The driver's calls the probe makes, by name.
struct Driver<'a>(&'a Library);

impl Driver<'_> {
    /// Calls `name(args)`, an error naming the call and the driver's `CUresult`.
    fn call<F: Copy>(&self, name: &str, f: impl FnOnce(F) -> c_int) -> Result<(), String> {
        let symbol = format!("{name}\0");
        // SAFETY: each caller names a driver API function with the signature `F` it declares.
        let function = unsafe { self.0.get::<F>(symbol.as_bytes()) }
            .map_err(|e| format!("libcuda has no {name} ({e})"))?;
        match f(*function) {
            0 => Ok(()),
            rc => Err(format!("{name} failed with {}", error_name(self.0, rc))),
        }
    }

    fn gpu(&self, ordinal: usize) -> Result<GpuInfo, String> {
        type GetDevice = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
        type GetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
        type TotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
        type Attribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
        let mut device: c_int = 0;
        // SAFETY (each call): the driver API's signatures, with out-pointers to live locals.
        self.call("cuDeviceGet", |f: GetDevice| unsafe {
            f(&mut device, ordinal as c_int)
        })?;
        let mut name = [0 as c_char; 256];
        self.call("cuDeviceGetName", |f: GetName| unsafe {
            f(name.as_mut_ptr(), name.len() as c_int, device)
        })?;
        let mut total: usize = 0;
        self.call("cuDeviceTotalMem_v2", |f: TotalMem| unsafe {
            f(&mut total, device)
        })?;
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR.
        self.call("cuDeviceGetAttribute", |f: Attribute| unsafe {
            f(&mut major, 75, device)
        })?;
        self.call("cuDeviceGetAttribute", |f: Attribute| unsafe {
            f(&mut minor, 76, device)
        })?;
        // SAFETY: cuDeviceGetName wrote a NUL-terminated string into the buffer.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) };
        Ok(GpuInfo {
            ordinal,
            name: name.to_string_lossy().into_owned(),
            total_bytes: total as u64,
            compute_capability: format!("{major}.{minor}"),
        })
    }

    /// The driver's CUDA version and its GPUs.
    fn describe(&self, report: &mut CudaReport) -> Result<(), String> {
        type Init = unsafe extern "C" fn(c_uint) -> c_int;
        type IntOut = unsafe extern "C" fn(*mut c_int) -> c_int;
        // SAFETY (each call): the driver API's signatures, with out-pointers to live locals.
        self.call("cuInit", |f: Init| unsafe { f(0) })?;
        let mut version: c_int = 0;
        self.call("cuDriverGetVersion", |f: IntOut| unsafe { f(&mut version) })?;
        report.driver_cuda_version = Some(format!("{}.{}", version / 1000, version % 1000 / 10));
        let mut count: c_int = 0;
        self.call("cuDeviceGetCount", |f: IntOut| unsafe { f(&mut count) })?;
        for ordinal in 0..count.max(0) as usize {
            report.gpus.push(self.gpu(ordinal)?);
        }
        Ok(())
    }
}

/// The architecture of candle's kernels: the `.target` line of their PTX (`sm_90`).
fn kernel_target() -> Option<String> {
    candle_core::cuda::kernels::AFFINE
        .ptx()
        .lines()
        .find_map(|line| line.trim().strip_prefix(".target "))
        .map(|target| target.split(',').next().unwrap_or(target).trim().to_owned())
}

/// Loads the driver and the libraries candle needs and asks the driver for its GPUs.
pub fn probe() -> CudaReport {
    let version = sys::CUDA_VERSION;
    let mut report = CudaReport {
        built_with_cuda: true,
        built_for_cuda: Some(format!("{}.{}", version / 1000, version % 1000 / 10)),
        kernel_target: kernel_target(),
        ..CudaReport::default()
    };
    let (driver, library) = load(&DRIVER);
    let driver_error = match (&driver.error, &library) {
        (Some(e), _) => Some(format!("the NVIDIA driver's {e}")),
        (None, Some(lib)) => Driver(lib).describe(&mut report).err(),
        (None, None) => Some("the NVIDIA driver did not stay loaded".into()),
    };
    report.driver = Some(driver);
    // The driver stays loaded for the process, as candle will open it again.
    std::mem::forget(library);
    report.libraries = LIBRARIES.iter().map(|l| load(l).0).collect();
    report.conclude(driver_error);
    report
}

/// What dn sets on a CUDA device it creates, before any tensor is allocated:
/// - no per-allocation events: cudarc creates a read and a write event with every buffer, used only when
///   a context has streams of its own; candle's device runs on the per-thread default stream and makes
///   none, so the events are created and destroyed around every allocation and never recorded;
/// - the memory pool keeps what it mapped: its release threshold is 0 by default, so every
///   synchronisation (one per step, every host read) unmaps the freed memory, and the next allocations map
///   it again. [`trim`] gives it back when a job ends or a pass runs out of memory.
pub fn prepare(device: &Device) -> candle_core::Result<()> {
    let cuda = device.as_cuda_device()?;
    // SAFETY: see above; no other stream is ever created on this context.
    unsafe { cuda.disable_event_tracking() };
    let Some(pool) = memory_pool(device) else {
        return Ok(());
    };
    let mut threshold = u64::MAX;
    // SAFETY: the attribute takes a cuuint64_t.
    let set = unsafe {
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    };
    if let Err(e) = set {
        tracing::warn!(
            "the CUDA memory pool will unmap what it frees at every synchronisation: {e}"
        );
    }
    Ok(())
}

/// The pool cudarc allocates from (the device's current one), or `None` where it allocates without one
/// (a device without memory pools: cudarc falls back to `cuMemAlloc`, as it decides at the same
/// attribute).
fn memory_pool(device: &Device) -> Option<sys::CUmemoryPool> {
    let context = device
        .as_cuda_device()
        .ok()?
        .cuda_stream()
        .context()
        .clone();
    context.bind_to_thread().ok()?;
    // SAFETY: the device handle comes from a live context.
    unsafe {
        let supported = result::device::get_attribute(
            context.cu_device(),
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED,
        )
        .ok()?;
        if supported <= 0 {
            return None;
        }
        result::device::get_mem_pool(context.cu_device()).ok()
    }
}

/// Bytes the device can still give this process: the driver's free memory plus what the pool holds
/// unused (it hands those out before mapping more).
pub fn free_memory(device: &Device) -> Option<u64> {
    let cuda = device.as_cuda_device().ok()?;
    let (free, _total) = cuda.cuda_stream().context().mem_get_info().ok()?;
    Some(free as u64 + pool_unused(device).unwrap_or(0))
}

/// The device's total memory less its free memory (all processes, and what dn's pool holds).
pub fn memory_used(device: &Device) -> Option<u64> {
    let cuda = device.as_cuda_device().ok()?;
    let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
    Some(total.saturating_sub(free) as u64)
}

fn pool_attribute(pool: sys::CUmemoryPool, attribute: sys::CUmemPool_attribute) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: the memory attributes are cuuint64_t.
    unsafe { result::mem_pool::get_attribute(pool, attribute, (&mut value as *mut u64).cast()) }
        .ok()?;
    Some(value)
}

fn pool_unused(device: &Device) -> Option<u64> {
    use sys::CUmemPool_attribute::{
        CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
    };
    let pool = memory_pool(device)?;
    let reserved = pool_attribute(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?;
    let used = pool_attribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
    Some(reserved.saturating_sub(used))
}

/// Gives the pool's unused memory back to the driver (other processes, a fresh layout after an
/// out-of-memory); waits for the context's pending work, and so its frees, first.
pub fn trim(device: &Device) {
    let Some(pool) = memory_pool(device) else {
        return;
    };
    if let Ok(cuda) = device.as_cuda_device() {
        let _ = cuda.cuda_stream().context().synchronize();
    }
    // SAFETY: the pool is the device's current pool.
    if let Err(e) = unsafe { result::mem_pool::trim_to(pool, 0) } {
        tracing::debug!("cannot trim the CUDA memory pool: {e}");
    }
}
