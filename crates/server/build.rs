//! Names the git commit the binary is built from (`seatkeeper --version`, and
//! `seatkeeper_build_info`): `SEATKEEPER_GIT_COMMIT` when set (container builds, which have
//! no `.git`), else `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SEATKEEPER_GIT_COMMIT");
    let from_env = std::env::var("SEATKEEPER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c != "unknown");
    let commit = from_env
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SEATKEEPER_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // Rebuild when HEAD moves (a commit, a checkout).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
