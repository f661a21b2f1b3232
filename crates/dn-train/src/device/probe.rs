//! What a node can train on: the CUDA libraries candle opens (by the file names cudarc tries), the driver
//! and its GPUs, and why CUDA cannot be used when it cannot. The lookup is written over a loader so the
//! name lists are tested without CUDA; `cuda.rs` supplies the real one (dlopen).

use std::path::PathBuf;

use serde::Serialize;

/// A library dn opens on a GPU node, with the file names it is found under.
pub struct CudaLibrary {
    /// What users call it: `cuBLAS`.
    pub name: &'static str,
    /// File names in the order cudarc (through which candle opens them) tries them, limited to the
    /// majors this build works with: the unversioned development link first, then the sonames.
    pub files: &'static [&'static str],
    /// The file an error names when none loads: the runtime soname a package installs.
    pub soname: &'static str,
    /// A symbol every version exports, to find the file the name resolved to.
    pub symbol: &'static str,
}

/// The NVIDIA driver's library.
pub const DRIVER: CudaLibrary = CudaLibrary {
    name: "the NVIDIA driver",
    files: &["libcuda.so", "libcuda.so.1"],
    soname: "libcuda.so.1",
    symbol: "cuInit",
};

/// What candle opens besides the driver when it creates a CUDA device. cuRAND has kept its soname at
/// `.10` from CUDA 10.2 to 13 (CUDA 12's and 13's wheels and runtime images ship `libcurand.so.10`).
pub const LIBRARIES: [CudaLibrary; 3] = [
    CudaLibrary {
        name: "cuBLAS",
        files: &["libcublas.so", "libcublas.so.13", "libcublas.so.12"],
        soname: "libcublas.so.13",
        symbol: "cublasCreate_v2",
    },
    CudaLibrary {
        name: "cuBLASLt",
        files: &["libcublasLt.so", "libcublasLt.so.13", "libcublasLt.so.12"],
        soname: "libcublasLt.so.13",
        symbol: "cublasLtCreate",
    },
    CudaLibrary {
        name: "cuRAND",
        files: &["libcurand.so", "libcurand.so.11", "libcurand.so.10"],
        soname: "libcurand.so.10",
        symbol: "curandCreateGenerator",
    },
];

/// One library as the lookup found it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LibraryStatus {
    pub name: String,
    /// The file name that loaded (`libcurand.so.10`).
    pub file: Option<String>,
    /// The file it resolved to (`/usr/local/cuda/lib64/libcurand.so.10.4.0.35`).
    pub path: Option<PathBuf>,
    /// Why none loaded.
    pub error: Option<String>,
}

/// Tries `library`'s names in order with `load` (which returns the resolved path or the loader's
/// error); the first that loads wins. The error names the soname, the loader's reason for it, and every
/// name tried.
pub fn find_library(
    library: &CudaLibrary,
    load: &mut dyn FnMut(&str) -> Result<PathBuf, String>,
) -> LibraryStatus {
    let mut soname_error = None;
    let mut first_error = None;
    for file in library.files {
        match load(file) {
            Ok(path) => {
                return LibraryStatus {
                    name: library.name.into(),
                    file: Some((*file).into()),
                    path: Some(path),
                    error: None,
                };
            }
            Err(e) if *file == library.soname => soname_error = Some(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let reason = soname_error.or(first_error).unwrap_or_default();
    LibraryStatus {
        name: library.name.into(),
        file: None,
        path: None,
        error: Some(format!(
            "{} cannot be loaded ({reason}; tried {}); install it or put its directory on \
             LD_LIBRARY_PATH",
            library.soname,
            library.files.join(", ")
        )),
    }
}

/// A GPU as the driver describes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: u64,
    /// `9.0` for an H100/H200.
    pub compute_capability: String,
}

/// What the probe found: the driver, its GPUs, the libraries, and why CUDA cannot be used (`None` when
/// it can).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CudaReport {
    /// Whether this build of dn has CUDA at all.
    pub built_with_cuda: bool,
    pub driver: Option<LibraryStatus>,
    /// The CUDA version the driver supports (`13.0`).
    pub driver_cuda_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    pub libraries: Vec<LibraryStatus>,
    /// The CUDA version this dn was built with (`13.0`): the driver must support it, or candle's
    /// kernels (PTX of that toolkit) do not load.
    pub built_for_cuda: Option<String>,
    /// The GPU architecture candle's kernels were compiled for (`sm_90`): older GPUs cannot run them.
    pub kernel_target: Option<String>,
    pub unusable: Option<String>,
}

/// `(major, minor)` of `13.0` or `9.0`.
fn major_minor(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `(major, minor)` of an architecture `sm_90`, `sm_90a`, `sm_120`.
fn architecture(target: &str) -> Option<(u32, u32)> {
    let digits = target
        .strip_prefix("sm_")?
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let split = digits.len().checked_sub(1)?;
    Some((digits[..split].parse().ok()?, digits[split..].parse().ok()?))
}

impl CudaReport {
    /// The report of a build without CUDA.
    pub fn without_cuda() -> Self {
        CudaReport {
            unusable: Some("this dn was built without CUDA (cargo feature `cuda`)".into()),
            ..CudaReport::default()
        }
    }

    /// Whether a driver and a GPU are here though CUDA cannot be used: what `auto` warns about (a node
    /// with no driver or no GPU is a CPU node, and says nothing).
    pub fn gpu_unusable(&self) -> bool {
        self.unusable.is_some() && !self.gpus.is_empty()
    }

    /// Why GPU `ordinal` cannot run this build's kernels, if it cannot: older than their target, or
    /// another architecture than an architecture-specific target (`sm_90a` runs on 9.0 only).
    pub fn gpu_problem(&self, ordinal: usize) -> Option<String> {
        let gpu = self.gpus.get(ordinal)?;
        let target = self.kernel_target.as_deref()?;
        let (have, needed) = (major_minor(&gpu.compute_capability)?, architecture(target)?);
        let specific = target.ends_with('a');
        let runs = if specific {
            have == needed
        } else {
            have >= needed
        };
        (!runs).then(|| {
            format!(
                "cuda:{ordinal} ({}, compute {}) cannot run the {target} kernels this dn was built \
                 with: build dn with CUDA_COMPUTE_CAP={}{}",
                gpu.name, gpu.compute_capability, have.0, have.1
            )
        })
    }

    /// Why the driver cannot load this build's kernels (it supports an older CUDA), if so.
    fn driver_problem(&self) -> Option<String> {
        let (driver, built) = (
            self.driver_cuda_version.as_deref()?,
            self.built_for_cuda.as_deref()?,
        );
        (major_minor(driver)? < major_minor(built)?).then(|| {
            format!(
                "the driver supports CUDA {driver}, older than the CUDA {built} this dn was built \
                 with (its kernels would not load): update the NVIDIA driver, or build dn with CUDA \
                 {driver}"
            )
        })
    }

    /// Sets [`Self::unusable`] from what was found: the first missing piece, in the order candle needs
    /// them (driver, GPUs, a driver and a first GPU new enough for the kernels, then each library).
    pub fn conclude(&mut self, driver_error: Option<String>) {
        let problem = if let Some(e) = driver_error {
            Some(e)
        } else if self.gpus.is_empty() {
            Some("the driver sees no GPU".into())
        } else {
            self.driver_problem()
                .or_else(|| self.gpu_problem(0))
                .or_else(|| self.libraries.iter().find_map(|l| l.error.clone()))
        };
        self.unusable = problem.map(|p| format!("no usable CUDA GPU: {p}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loader over a directory of (empty) library files: a name loads when its file is there.
    fn directory(
        files: &[&str],
    ) -> (
        tempfile::TempDir,
        impl FnMut(&str) -> Result<PathBuf, String>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let root = dir.path().to_path_buf();
        (dir, move |name: &str| {
            let path = root.join(name);
            if path.exists() {
                Ok(path)
            } else {
                Err(format!("{name}: cannot open shared object file"))
            }
        })
    }

    fn found(files: &[&str]) -> Vec<Option<String>> {
        let (_dir, mut load) = directory(files);
        LIBRARIES
            .iter()
            .map(|l| find_library(l, &mut load).file)
            .collect()
    }

    #[test]
    fn cuda_13_and_12_runtime_names_are_accepted() {
        // CUDA 13's wheels and runtime images: sonames only, cuRAND at .10.
        let cuda13 = ["libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"];
        assert_eq!(found(&cuda13), cuda13.map(|f| Some(f.to_string())).to_vec());
        let cuda12 = ["libcublas.so.12", "libcublasLt.so.12", "libcurand.so.10"];
        assert_eq!(found(&cuda12), cuda12.map(|f| Some(f.to_string())).to_vec());
        // A devel image's unversioned links win, as cudarc tries them first.
        let devel = [
            "libcublas.so",
            "libcublas.so.13",
            "libcublasLt.so",
            "libcurand.so",
            "libcurand.so.10",
        ];
        assert_eq!(
            found(&devel),
            ["libcublas.so", "libcublasLt.so", "libcurand.so"].map(|f| Some(f.to_string()))
        );
        let (_dir, mut load) = directory(&["libcuda.so.1"]);
        assert_eq!(
            find_library(&DRIVER, &mut load).file.as_deref(),
            Some("libcuda.so.1")
        );
    }

    #[test]
    fn a_missing_library_names_its_soname_the_reason_and_every_name_tried() {
        let (_dir, mut load) = directory(&["libcublas.so.13", "libcublasLt.so.13"]);
        let curand = find_library(&LIBRARIES[2], &mut load);
        let e = curand.error.unwrap();
        assert!(
            e.starts_with("libcurand.so.10 cannot be loaded (libcurand.so.10: cannot open")
                && e.contains("tried libcurand.so, libcurand.so.11, libcurand.so.10")
                && e.contains("LD_LIBRARY_PATH"),
            "{e}"
        );
    }

    #[test]
    fn the_conclusion_is_the_first_missing_piece_and_only_a_seen_gpu_warns() {
        let gpu = GpuInfo {
            ordinal: 0,
            name: "NVIDIA H200".into(),
            total_bytes: 150 << 30,
            compute_capability: "9.0".into(),
        };
        let (_dir, mut load) = directory(&["libcublas.so.13", "libcublasLt.so.13"]);
        let mut report = CudaReport {
            built_with_cuda: true,
            gpus: vec![gpu],
            libraries: LIBRARIES
                .iter()
                .map(|l| find_library(l, &mut load))
                .collect(),
            ..CudaReport::default()
        };
        report.conclude(None);
        let why = report.unusable.clone().unwrap();
        assert!(
            why.starts_with("no usable CUDA GPU: libcurand.so.10"),
            "{why}"
        );
        assert!(report.gpu_unusable());

        // A driver older than the build, then a GPU older than the kernels' target.
        let mut old_driver = CudaReport {
            driver_cuda_version: Some("12.4".into()),
            built_for_cuda: Some("13.0".into()),
            kernel_target: Some("sm_90".into()),
            libraries: Vec::new(),
            ..report.clone()
        };
        old_driver.conclude(None);
        let why = old_driver.unusable.clone().unwrap();
        assert!(
            why.contains("the driver supports CUDA 12.4, older than the CUDA 13.0"),
            "{why}"
        );
        old_driver.driver_cuda_version = Some("13.0".into());
        old_driver.gpus[0].compute_capability = "8.0".into();
        old_driver.conclude(None);
        let why = old_driver.unusable.clone().unwrap();
        assert!(
            why.contains("cuda:0 (NVIDIA H200, compute 8.0) cannot run the sm_90 kernels")
                && why.contains("CUDA_COMPUTE_CAP=80"),
            "{why}"
        );
        old_driver.gpus[0].compute_capability = "12.0".into();
        old_driver.conclude(None);
        assert_eq!(old_driver.unusable, None);
        // Architecture-specific kernels (candle builds sm_90a for 90) run on their architecture only.
        old_driver.kernel_target = Some("sm_90a".into());
        old_driver.conclude(None);
        assert!(old_driver.unusable.is_some());
        old_driver.gpus[0].compute_capability = "9.0".into();
        old_driver.conclude(None);
        assert_eq!(old_driver.unusable, None);
        assert_eq!(architecture("sm_90a"), Some((9, 0)));
        assert_eq!(architecture("sm_120"), Some((12, 0)));

        let mut cpu_node = CudaReport {
            built_with_cuda: true,
            ..CudaReport::default()
        };
        cpu_node.conclude(Some("libcuda.so.1 cannot be loaded".into()));
        assert!(!cpu_node.gpu_unusable());
        assert!(!CudaReport::without_cuda().gpu_unusable());
    }
}
