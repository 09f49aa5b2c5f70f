//! `fastvmd image import | ls | rm`: named images in the image cache
//! ([`crate::image::import`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::image::import;
use crate::image::oci::Progress;

/// Where the image cache is.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Image cache (default: $FASTVM_IMAGE_CACHE, else <data dir>/images).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Data directory whose images/ is the default cache (default:
    /// $FASTVM_HOME, /var/lib/fastvm as root, else ~/.local/share/fastvm).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl CacheArgs {
    fn cache(self) -> PathBuf {
        let data_dir = self.data_dir.unwrap_or_else(crate::serve::default_data_dir);
        self.cache_dir
            .unwrap_or_else(|| crate::image::cache_dir(&data_dir))
    }
}

/// Arguments of `fastvmd image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Name of the new image (a-z, 0-9, '.', '_', '-').
    pub name: String,
    /// A `docker save` archive or an OCI image layout (a directory or a
    /// tar), or `-` to read the tar from standard input.
    pub file: String,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// The static guest-agent to install as /sbin/init (default: the one
    /// `fastvmd image build` made).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
}

/// Arguments of `fastvmd image rm`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The image to remove.
    pub name: String,
    #[command(flatten)]
    pub cache: CacheArgs,
}

fn fail(command: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("fastvmd image {command}: error: {e}");
    ExitCode::from(crate::vmm::exit::EXIT_ERROR as u8)
}

/// Runs `fastvmd image import`.
pub fn run_import(args: ImportArgs) -> ExitCode {
    if let Err(e) = import::check_name(&args.name) {
        return fail("import", e);
    }
    let cache = args.cache.cache();
    let agent_path = match args.agent {
        Some(path) => path,
        None => match crate::image::Image::current(&cache) {
            Ok(image) => image.agent,
            Err(e) => return fail("import", format!("{e} (it provides the guest-agent)")),
        },
    };
    let agent = match std::fs::read(&agent_path) {
        Ok(bytes) => bytes,
        Err(e) => return fail("import", format!("{}: {e}", agent_path.display())),
    };
    let start = std::time::Instant::now();
    let mut progress = |p: &Progress| {
        eprintln!(
            "import: layer {}/{} {} ({:.1} MiB)",
            p.index,
            p.count,
            p.name,
            p.bytes as f64 / (1u64 << 20) as f64
        );
    };
    match import::import(&cache, &args.name, &args.file, &agent, &mut progress) {
        Ok((dir, info)) => {
            println!("image: {}", info.name);
            println!("rootfs: {}", dir.join(crate::image::ROOTFS).display());
            eprintln!(
                "import: {} ready in {:.1}s ({} layers)",
                info.name,
                start.elapsed().as_secs_f64(),
                info.layers
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("import", e),
    }
}

/// Runs `fastvmd image ls`.
pub fn run_list(args: CacheArgs) -> ExitCode {
    let cache = args.cache();
    let built = crate::image::Image::current(&cache).is_ok();
    println!("NAME\tLAYERS\tSOURCE");
    println!(
        "linux (default)\t-\t{}",
        if built {
            "fastvmd image build"
        } else {
            "not built: run `fastvmd image build`"
        }
    );
    for image in import::list(&cache) {
        println!("{}\t{}\t{}", image.name, image.layers, image.source);
    }
    ExitCode::SUCCESS
}

/// Runs `fastvmd image rm`.
pub fn run_remove(args: RemoveArgs) -> ExitCode {
    match import::remove(&args.cache.cache(), &args.name) {
        Ok(()) => {
            println!("removed {}", args.name);
            ExitCode::SUCCESS
        }
        Err(e) => fail("rm", e),
    }
}
