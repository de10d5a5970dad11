//! Man pages (clap_mangen) and shell completions (clap_complete) generated
//! from a binary's own clap definition, so they always match `--help`.
//! `scripts/package.sh` runs each binary with `RUSTYNET_GENERATE_DOCS=DIR`
//! and ships what lands in DIR:
//!
//! ```text
//! DIR/man/NAME.SECTION
//! DIR/completions/bash/NAME
//! DIR/completions/zsh/_NAME
//! DIR/completions/fish/NAME.fish
//! ```

use std::io;
use std::path::Path;

use clap_complete::Shell;

/// The variable that asks a binary to write its docs and exit.
pub const ENV: &str = "RUSTYNET_GENERATE_DOCS";

/// Writes the man page (in `section`) and completions of `cmd` under `dir`.
pub fn generate(mut cmd: clap::Command, section: &str, dir: &Path) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut page)?;
    std::fs::write(man_dir.join(format!("{name}.{section}")), page)?;
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let shell_dir = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&shell_dir)?;
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        std::fs::write(shell_dir.join(file), out)?;
    }
    Ok(())
}

/// When `RUSTYNET_GENERATE_DOCS` is set, writes the docs there and returns
/// how the binary should exit (an error is printed); `None` otherwise.
// Called first thing in `main`, before logging exists: stderr is the only
// place to say why the docs could not be written.
#[allow(clippy::print_stderr)]
pub fn generate_if_asked(
    cmd: impl FnOnce() -> clap::Command,
    section: &str,
) -> Option<std::process::ExitCode> {
    let dir = std::env::var_os(ENV)?;
    Some(match generate(cmd(), section, Path::new(&dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_a_man_page_and_completions_for_every_shell() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("demo")
            .about("A demo")
            .arg(
                clap::Arg::new("socket")
                    .long("socket")
                    .help("Daemon socket"),
            )
            .subcommand(clap::Command::new("status").about("Show state"));
        generate(cmd, "1", dir.path()).unwrap();
        let man = std::fs::read_to_string(dir.path().join("man/demo.1")).unwrap();
        assert!(
            man.contains(".TH demo 1") && man.contains("socket"),
            "{man}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/demo")).unwrap();
        assert!(bash.contains("status") && bash.contains("--socket"));
        assert!(dir.path().join("completions/zsh/_demo").is_file());
        assert!(dir.path().join("completions/fish/demo.fish").is_file());
    }
}
