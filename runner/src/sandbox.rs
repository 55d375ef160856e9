//! Code that must not be trusted (a student's submission, when an instructor verifies it) runs
//! confined, with Landlock (Linux ≥ 5.13, no root needed).
//!
//! [`install`] confines this process to a ceiling (what the check itself needs) and prepares two
//! narrower confinements for its children: [`Kind::Build`] (cargo and rustc compiling the code:
//! what `include_str!` or `env!` could read at compile time) and [`Kind::Run`] (every process
//! that executes it: the stages, the kernel and conformance runs, valgrind, a benchmark). Each
//! place that starts such a process passes its `Command` through [`confine`], which restricts the
//! child before it executes: it reads and executes only the system's files and the paths of its
//! [`Policy`], writes only its writable paths, and cannot trace, or open the memory of, a process
//! outside its confinement, nor (Landlock ABI 6) signal one. Landlock leaves another process's
//! `/proc/PID/environ` and `/proc/PID/cmdline` readable (tried on Linux 6.18): keeping secrets out
//! of sight is the caller's part (a PID namespace). A place that forgets [`confine`] still runs
//! under this process's ceiling.
//!
//! Without [`install`] (a student's own `lab check`, every test), [`confine`] does nothing.
//!
//! The network, the other processes and the environment are the caller's part: `leaderboard
//! verify` starts the whole check in a bubblewrap namespace with processes of its own, loopback
//! only and an allow-listed environment (`cli/src/verify_sandbox.rs`).

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetError, Scope, path_beneath_rules,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What a confined process may touch besides the system's files ([`SYSTEM_READ`]).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Read and execute (files or folders, with everything below them).
    pub read: Vec<PathBuf>,
    /// Read, execute, write, create and remove.
    pub write: Vec<PathBuf>,
    /// The child's `TMPDIR` (one of `write`).
    pub tmp: Option<PathBuf>,
}

impl Policy {
    /// Both policies' paths: what the process holding them needs at least.
    fn union(&self, other: &Policy) -> Policy {
        let mut read = self.read.clone();
        read.extend(other.read.iter().cloned());
        let mut write = self.write.clone();
        write.extend(other.write.iter().cloned());
        Policy {
            read,
            write,
            tmp: None,
        }
    }
}

/// Which confinement a child gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Compiling the code: cargo, rustc, the linker.
    Build,
    /// Executing it.
    Run,
}

/// What every confined process may read and execute: the programs and libraries of the system,
/// the dynamic linker's and the C compiler's configuration, and the kernel's `/proc` and `/sys`
/// (a process's own statistics; another process's memory stays out of reach, Landlock refuses
/// tracing one outside the confinement, but not its `environ`). Nothing under `/home`, `/root`,
/// `/tmp`, `/var` or `/run`, and of `/etc` only these files.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/proc",
    "/sys",
];

/// The devices a confined process may open for reading and writing (not create).
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "this kernel does not offer Landlock (Linux 5.13 or later, with `landlock` in the boot's lsm= list): the code cannot be confined here"
    )]
    Unavailable,
    #[error("the confinement is installed already")]
    Installed,
    #[error("building the Landlock rules: {0}")]
    Rules(#[from] RulesetError),
    #[error("confining this process: {0}")]
    Restrict(String),
}

/// The kernel's Landlock ABI version (0: none).
pub fn abi_version() -> i32 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or -1); it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

/// The ruleset of `policy`: every file access handled (what the kernel knows of), tracing and
/// (Landlock ABI 6) signals and abstract sockets scoped to the confinement.
fn ruleset(policy: &Policy) -> Result<RulesetCreated, SandboxError> {
    let devices = AccessFs::ReadFile | AccessFs::WriteFile;
    let read = AccessFs::from_read(ABI::V5);
    let all = AccessFs::from_all(ABI::V5);
    let system = SYSTEM_READ.iter().map(Path::new);
    let created = Ruleset::default()
        // The first ABI's file rights or nothing: an unconfined run would pass for a confined one.
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(|_| SandboxError::Unavailable)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .scope(Scope::from_all(ABI::V6))?
        .create()?
        .add_rules(path_beneath_rules(system, read))?
        .add_rules(path_beneath_rules(policy.read.iter(), read))?
        .add_rules(path_beneath_rules(DEVICES.iter().map(Path::new), devices))?
        .add_rules(path_beneath_rules(policy.write.iter(), all))?;
    Ok(created)
}

/// The installed confinements: a ruleset file descriptor per [`Kind`].
struct Installed {
    build: (OwnedFd, Option<PathBuf>),
    run: (OwnedFd, Option<PathBuf>),
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Confine this process to `build` ∪ `run` ∪ `own` (what the check itself reads and writes), and
/// prepare `build` and `run` for [`confine`]. Once per process; irreversible.
pub fn install(build: &Policy, run: &Policy, own: &Policy) -> Result<(), SandboxError> {
    if abi_version() < 1 {
        return Err(SandboxError::Unavailable);
    }
    if INSTALLED.get().is_some() {
        return Err(SandboxError::Installed);
    }
    let fd = |r: RulesetCreated| -> Result<OwnedFd, SandboxError> {
        Option::<OwnedFd>::from(r).ok_or(SandboxError::Unavailable)
    };
    let installed = Installed {
        build: (fd(ruleset(build)?)?, build.tmp.clone()),
        run: (fd(ruleset(run)?)?, run.tmp.clone()),
    };
    let ceiling = ruleset(&build.union(run).union(own))?;
    let status = ceiling
        .restrict_self()
        .map_err(|e| SandboxError::Restrict(e.to_string()))?;
    if status.ruleset == landlock::RulesetStatus::NotEnforced {
        return Err(SandboxError::Unavailable);
    }
    INSTALLED
        .set(installed)
        .map_err(|_| SandboxError::Installed)?;
    Ok(())
}

/// Is a confinement installed (so [`confine`] confines)?
pub fn installed() -> bool {
    INSTALLED.get().is_some()
}

/// Confine the child `cmd` starts to `kind` (when [`install`] ran; otherwise nothing changes).
pub fn confine(cmd: &mut std::process::Command, kind: Kind) {
    use std::os::unix::process::CommandExt;
    let Some(i) = INSTALLED.get() else {
        return;
    };
    let (fd, tmp) = match kind {
        Kind::Build => (&i.build.0, &i.build.1),
        Kind::Run => (&i.run.0, &i.run.1),
    };
    if let Some(tmp) = tmp {
        cmd.env("TMPDIR", tmp);
    }
    let fd = fd.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls: prctl and the
    // landlock_restrict_self system call on a descriptor that lives as long as the process
    // (INSTALLED is never dropped); no allocation (last_os_error reads errno).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What the kernel enforces, for a verification's report.
pub fn describe() -> String {
    let abi = abi_version();
    let scopes = if abi >= 6 {
        "signals and abstract sockets scoped"
    } else {
        "signals not scoped (Landlock ABI 6, Linux 6.12, needed)"
    };
    format!("Landlock ABI {abi}: files allow-listed, tracing refused, {scopes}")
}
