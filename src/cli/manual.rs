//! `busrig completions SHELL` and `busrig man`: shell completions and
//! man pages generated from the clap definition of the whole CLI, so they
//! always match `--help` (README "Shell completions and man pages").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh (a `_busrig` file on $fpath).
    Zsh,
    /// fish.
    Fish,
}

#[derive(clap::Args)]
#[command(after_help = "\
Install:
  busrig completions bash > ~/.local/share/bash-completion/completions/busrig
  busrig completions zsh  > ~/.zfunc/_busrig   # with fpath+=(~/.zfunc) in ~/.zshrc
  busrig completions fish > ~/.config/fish/completions/busrig.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::Args)]
#[command(after_help = "\
Install:
  busrig man --dir ~/.local/share/man/man1   # then: man busrig-disk
  busrig man | man -l -                       # read busrig(1) without installing")]
pub struct ManArgs {
    /// Write busrig.1 and one page per subcommand (busrig-disk.1,
    /// busrig-disk-inquiry.1, ...) into DIR, creating it; without --dir,
    /// busrig(1) alone goes to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completions(cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    use clap_complete::Shell as S;
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
    };
    let mut cmd = cmd;
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes one man page per visible command of `cmd` (itself included) into
/// `dir`, returning the files written, deepest first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, written)?;
        }
        written.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    // Built once at the top so that every page's name is the full path of
    // its command (busrig-disk-inquiry); `help` is clap's, not a verb.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    walk(&cmd, dir, &mut written)?;
    Ok(written)
}

/// `busrig man`: busrig(1) on stdout, or every page into `--dir`.
pub fn man(cmd: clap::Command, a: ManArgs) -> anyhow::Result<ExitCode> {
    match a.dir {
        Some(dir) => {
            let written = man_pages(cmd, &dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
            println!("wrote {} man pages to {}", written.len(), dir.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("cannot write the man page")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `busrig completions SHELL`.
pub fn run_completions(cmd: clap::Command, a: CompletionsArgs) -> ExitCode {
    completions(cmd, a.shell, &mut std::io::stdout().lock());
    ExitCode::SUCCESS
}
