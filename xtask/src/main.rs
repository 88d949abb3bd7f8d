//! `cargo xtask`: Sightline's project tasks, in Rust so they run wherever cargo does.
//!
//! - `demo`: build the viewer, run relay + agent (synthetic screen) on loopback, print the URL.
//! - `build`: build the viewer into `static/pkg` and every binary (debug).
//! - `test`: install what is missing, then fmt, clippy, unit and integration tests, the wasm
//!   build and the Playwright suite. This is what CI runs.
//! - `e2e [playwright args]`: build what the browser tests need and run Playwright alone.
//! - `bench [playwright args]`: the audit log benchmark and the latency benchmarks; results in
//!   `bench-results/`, summary printed.
//! - `fuzz [--seconds N]`: the property tests over every parser (`fuzz_*`), round after round
//!   with fresh seeds and many cases, for a time budget (default 300 s).

mod install;
mod run;
#[cfg(test)]
mod tidy;
mod viewer;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::run::{cargo, cmd};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = project_root()?;
    std::env::set_current_dir(&root)?;
    match task.as_str() {
        "demo" => demo(&root),
        "build" => build(&root),
        "test" => test(&root),
        "e2e" => e2e(&root, &rest),
        "bench" => bench(&root, &rest),
        "fuzz" => fuzz(&root, &rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <demo|build|test|e2e [playwright args]|bench [playwright args]|fuzz [--seconds N]>"
            );
            bail!("unknown task {task:?}")
        }
    }
}

/// The checkout this run works on: found from the current directory at run time, never from
/// where xtask was compiled (two clones sharing one target directory share one xtask binary).
fn project_root() -> Result<PathBuf> {
    let here = std::env::current_dir().context("cannot read the current directory")?;
    find_root(&here).with_context(|| format!("{} is not inside a Sightline checkout", here.display()))
}

/// The nearest directory at or above `start` that holds the workspace's Cargo.toml and xtask.
fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            dir.join("xtask").is_dir()
                && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| toml.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
}

#[cfg(test)]
#[test]
fn the_root_is_found_from_where_the_task_runs_not_where_it_was_built() {
    let tmp = std::env::temp_dir().join(format!("xtask-root-{}", std::process::id()));
    let (a, b) = (tmp.join("clone-a"), tmp.join("clone-b"));
    for clone in [&a, &b] {
        std::fs::create_dir_all(clone.join("xtask")).unwrap();
        std::fs::create_dir_all(clone.join("relay/src")).unwrap();
        std::fs::write(clone.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        // A crate's own manifest below the root is not the root.
        std::fs::write(clone.join("relay/Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    }
    assert_eq!(find_root(&a.join("relay/src")), Some(a.clone()));
    assert_eq!(find_root(&b), Some(b.clone()));
    // Control: outside any checkout there is none.
    assert_eq!(find_root(&tmp), None);
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Where cargo puts build output (honours `CARGO_TARGET_DIR`).
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let out = cmd(root, env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    Ok(PathBuf::from(meta["target_directory"].as_str().context("no target_directory in cargo metadata")?))
}

/// Builds every binary of the workspace (debug). Always the whole workspace, so features unify
/// the same way each time and dependencies are not rebuilt between steps.
fn build_binaries(root: &Path) -> Result<PathBuf> {
    cargo(root, &["build", "--workspace", "--all-targets"])?;
    Ok(target_dir(root)?.join("debug"))
}

fn demo(root: &Path) -> Result<()> {
    install::ensure_tools(root, install::Need::Demo)?;
    viewer::build(root)?;
    let bin = build_binaries(root)?;
    run::demo(root, &bin)
}

fn build(root: &Path) -> Result<()> {
    install::ensure_tools(root, install::Need::Demo)?;
    viewer::build(root)?;
    let bin = build_binaries(root)?;
    eprintln!("built: {} (relay, agent) and {}", bin.display(), root.join("static/pkg").display());
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let mut steps = Steps::default();
    steps.time("install", || install::ensure_tools(root, install::Need::Test))?;
    steps.time("fmt", || cargo(root, &["fmt", "--all", "--check"]))?;
    steps.time("clippy", || cargo(root, &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    steps.time("clippy (viewer, wasm32)", || viewer::lint(root))?;
    // In-process integration tests answer consent through the `test-consent` feature; the
    // binaries the browser tests run are rebuilt without it right after (only the agent crate
    // differs, and cargo keeps both builds, so this costs a relink).
    let test = ["test", "--workspace", "--features", "sightline-agent/test-consent"];
    steps.time("build tests", || cargo(root, &[&test[..], &["--no-run"]].concat()))?;
    steps.time("run tests", || cargo(root, &test))?;
    let bin = steps.time("build binaries", || build_binaries(root))?;
    steps.time("build viewer", || viewer::build(root))?;
    steps.time("playwright", || playwright(root, &bin, &["--grep-invert", "@bench"]))?;
    eprintln!("xtask test: all steps passed in {:.0?}\n{steps}", started.elapsed());
    Ok(())
}

/// How long each step of a task took, printed at the end so a slow CI run says where its time
/// went (the budget is 50 minutes on 2 cores).
#[derive(Default)]
struct Steps(Vec<(&'static str, std::time::Duration)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let out = step();
        self.0.push((name, started.elapsed()));
        eprintln!("xtask: step {name:?} took {:.0?}", started.elapsed());
        out
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, took) in &self.0 {
            writeln!(f, "  {:>7.1} s  {name}", took.as_secs_f64())?;
        }
        Ok(())
    }
}

fn e2e(root: &Path, args: &[String]) -> Result<()> {
    install::ensure_tools(root, install::Need::Test)?;
    viewer::build(root)?;
    let bin = build_binaries(root)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    playwright(root, &bin, &args)
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    install::ensure_tools(root, install::Need::Test)?;
    viewer::build(root)?;
    let bin = build_binaries(root)?;
    let mut all = vec!["--grep", "@bench", "--workers", "1"];
    all.extend(args.iter().map(String::as_str));
    std::fs::create_dir_all(root.join("bench-results"))?;
    // The audit log: appends, acknowledgement latency, verification, proofs, SIEM.
    example_bench(root, &bin, "audit_bench", "audit.json")?;
    // What the audit log's second copy in Redis costs (R43), against the disk alone.
    example_bench(root, &bin, "audit_copy_bench", "audit_copy.json")?;
    // Masking: planning and painting 1, 10 and 50 window rules on a 1080p frame.
    example_bench(root, &bin, "mask_bench", "masking.json")?;
    // Two tracks: one encoder against the operator's and the recording's pictures together.
    example_bench(root, &bin, "tracks_bench", "tracks.json")?;
    playwright(root, &bin, &all)?;
    eprintln!("benchmark results are in {}", root.join("bench-results").display());
    Ok(())
}

/// Cases per property in one fuzz round: a round takes seconds, so the budget is kept closely.
const FUZZ_CASES_PER_ROUND: u32 = 20_000;

/// Runs the `fuzz_*` property tests with fresh random seeds, round after round, until `--seconds`
/// (default 300) have passed. A failure stops at once with proptest's minimal input, and the seed
/// is saved in a `.proptest-regressions` file beside the test, so the next `cargo test` replays it.
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let seconds: u64 = match args {
        [] => 300,
        [flag, n] if flag == "--seconds" => n.parse().with_context(|| format!("--seconds {n:?}: not a number"))?,
        _ => bail!("usage: cargo xtask fuzz [--seconds N]"),
    };
    let budget = std::time::Duration::from_secs(seconds);
    // The same package set and features as `cargo xtask test`, so nothing is rebuilt twice.
    let test = ["test", "--workspace", "--features", "sightline-agent/test-consent"];
    cargo(root, &[&test[..], &["--no-run"]].concat())?;
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while started.elapsed() < budget {
        run::status(
            cmd(root, env!("CARGO"))
                .args(test)
                .args(["--quiet", "--", "fuzz_"])
                .env("PROPTEST_CASES", FUZZ_CASES_PER_ROUND.to_string()),
            &format!("fuzz round {}", rounds + 1),
        )?;
        rounds += 1;
    }
    eprintln!(
        "xtask fuzz: {rounds} rounds of {FUZZ_CASES_PER_ROUND} cases per property in {:.0?}, no failure",
        started.elapsed()
    );
    Ok(())
}

/// Runs a benchmark example pinned to one core; it writes its results to `bench-results/OUT`.
fn example_bench(root: &Path, bin: &Path, example: &str, out: &str) -> Result<()> {
    run::status(
        cmd(root, "taskset")
            .arg("-c")
            .arg("0")
            .arg(bin.join("examples").join(example))
            .arg(root.join("bench-results").join(out)),
        &format!("{example} benchmark"),
    )
}

/// Runs the Playwright suite against the binaries in `bin`.
fn playwright(root: &Path, bin: &Path, args: &[&str]) -> Result<()> {
    let e2e = root.join("e2e");
    let mut command = cmd(&e2e, "node_modules/.bin/playwright");
    command
        .arg("test")
        .args(args)
        .env("SIGHTLINE_BIN_DIR", bin)
        .env("SIGHTLINE_STATIC_DIR", root.join("static"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    run::status(&mut command, "playwright")
}
