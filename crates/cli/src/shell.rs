//! `streamcell sql`: the SQL shell. It owns the subcommand's flags, the interactive loop
//! (prompts, line editing and history through rustyline, `\q`/`\h`, Ctrl-C and Ctrl-D) and the
//! non-interactive modes (`-e`, `-f`, statements piped on stdin), and the exit codes: 0 when
//! everything ran, 1 when a statement failed or the server could not be reached, 2 for bad
//! flags, 130 after Ctrl-C in a non-interactive run. Cutting input into statements is
//! [`scanner`]'s job; talking to the server is [`client`]'s.

mod client;
mod scanner;

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use client::{Connection, ShellError, Target};

/// The prompt for a new statement.
const PROMPT: &str = "streamcell> ";
/// The prompt for the next line of an unfinished statement (as wide as [`PROMPT`]).
const CONTINUATION_PROMPT: &str = "         -> ";
/// The history file, in the home directory.
const HISTORY_FILE: &str = ".streamcell_history";
/// Statements kept in the history.
const HISTORY_SIZE: usize = 1000;

const HELP: &str = "\
Type SQL statements ending with ';' (a statement may span several lines), e.g.
  CREATE STREAM sales;
  SELECT product, MAX(len) AS max_len FROM sales GROUP BY product EMIT CHANGES;
Rows are printed one JSON object per line.
  \\h, help          this help
  \\q, quit, exit    leave the shell (or Ctrl-D)
Ctrl-C stops the running statement (e.g. a push query ... EMIT CHANGES) or clears
the input typed so far. Up/Down browse the history (~/.streamcell_history).";

/// Flags of `streamcell sql`.
#[derive(Debug, clap::Args)]
pub(crate) struct SqlFlags {
    /// Server host name or address
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Server gRPC port
    #[arg(long, value_name = "PORT", default_value_t = 6570)]
    pub port: u16,
    /// Run these statements (separated by ';') and exit
    #[arg(
        short = 'e',
        long = "execute",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    pub execute: Option<String>,
    /// Run the statements in this file ('-' for stdin) and exit
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Connect with TLS, verifying the server against this CA certificate (PEM)
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one; needs --tls-key and --tls-ca
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM); needs --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the server certificate must be valid for [default: --host]
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_domain: Option<String>,
    /// Log in as this user (with --password) on a server that requires credentials
    #[arg(
        long,
        value_name = "NAME",
        requires = "password",
        conflicts_with = "token"
    )]
    pub user: Option<String>,
    /// The user's password
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "STREAMCELL_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// Log in with the server's access token
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STREAMCELL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Runs the shell and returns its exit code.
pub(crate) fn run(flags: SqlFlags) -> ExitCode {
    let target = Target {
        host: flags.host,
        port: flags.port,
        tls_ca: flags.tls_ca,
        tls_identity: flags.tls_cert.zip(flags.tls_key),
        tls_domain: flags.tls_domain,
        authorization: match (flags.user, flags.password, flags.token) {
            (_, _, Some(token)) => Some(format!("Bearer {token}")),
            (Some(user), Some(password), None) => {
                use base64::Engine as _;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ))
            }
            _ => None,
        },
    };
    if target.authorization.is_some() && target.tls_ca.is_none() {
        eprintln!(
            "streamcell sql: warning: sending credentials without TLS (give --tls-ca): anyone \
             on the network path can read them"
        );
    }
    let conn = match Connection::new(&target) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamcell sql: {e}");
            return ExitCode::from(2);
        }
    };
    // One worker thread besides the main one: the connection's tasks must keep running while
    // the main thread waits in readline, e.g. to send the cancellation of a push query that
    // Ctrl-C stopped.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamcell sql: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let input = match (flags.execute, flags.file) {
        (Some(sql), _) => Input::Text(sql),
        (None, Some(path)) if path.as_os_str() == "-" => Input::Stdin,
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => Input::Text(text),
            Err(e) => {
                eprintln!("streamcell sql: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, None) if std::io::stdin().is_terminal() => return interactive(&rt, conn),
        (None, None) => Input::Stdin,
    };
    batch(&rt, conn, input)
}

/// Where a non-interactive run takes its statements from.
enum Input {
    /// All of them at once (`-e`, `-f FILE`).
    Text(String),
    /// Standard input, run as each statement is complete.
    Stdin,
}

/// Completes on Ctrl-C (SIGINT); never if the signal cannot be listened for.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `work` unless Ctrl-C comes first, in which case `work` is dropped (which cancels its
/// call) and the result is [`ShellError::Interrupted`].
async fn cancellable(work: impl Future<Output = Result<(), ShellError>>) -> Result<(), ShellError> {
    tokio::select! {
        r = work => r,
        () = ctrl_c() => Err(ShellError::Interrupted),
    }
}

/// A non-interactive run: every statement in order, stopping at the first error.
fn batch(rt: &Runtime, mut conn: Connection, input: Input) -> ExitCode {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let result = rt.block_on(cancellable(async {
        match input {
            Input::Text(text) => {
                for stmt in statements(&text) {
                    conn.execute(&stmt, &mut out).await?;
                }
                Ok(())
            }
            Input::Stdin => run_stdin(&mut conn, &mut out).await,
        }
    }));
    // Whatever was printed before an error or Ctrl-C goes out first.
    let flushed = out.flush();
    match result.and(flushed.map_err(ShellError::Output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ShellError::Interrupted) => ExitCode::from(130),
        Err(ShellError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::FAILURE
        }
        Err(e @ ShellError::Usage(_)) => {
            eprintln!("streamcell sql: {e}");
            ExitCode::from(2)
        }
        Err(e @ (ShellError::Input { .. } | ShellError::Output(_))) => {
            eprintln!("streamcell sql: {e}");
            ExitCode::FAILURE
        }
        Err(e @ (ShellError::Connect { .. } | ShellError::Status { .. })) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The statements of a whole text, the last one also without its `;`.
fn statements(text: &str) -> Vec<String> {
    let split = scanner::split(text);
    let mut stmts = split.statements;
    if split.pending {
        stmts.push(split.rest.trim().to_string());
    }
    stmts
}

/// Runs the statements piped on stdin, each as soon as its `;` has arrived (so a shell script
/// can feed statements one by one).
async fn run_stdin(conn: &mut Connection, out: &mut dyn Write) -> Result<(), ShellError> {
    let mut lines = stdin_lines();
    let mut buf = String::new();
    while let Some(line) = lines.recv().await {
        buf.push_str(&line?);
        let split = scanner::split(&buf);
        for stmt in &split.statements {
            conn.execute(stmt, out).await?;
        }
        buf = if split.pending {
            split.rest
        } else {
            String::new()
        };
    }
    for stmt in statements(&buf) {
        conn.execute(&stmt, out).await?;
    }
    Ok(())
}

/// The lines of stdin (with their '\n'), read by a thread of their own so that a blocked read
/// never holds up Ctrl-C. The channel closes at the end of the input or after an error.
fn stdin_lines() -> mpsc::Receiver<Result<String, ShellError>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut bytes = Vec::new();
            let line = match stdin.read_until(b'\n', &mut bytes) {
                Ok(0) => return,
                Ok(_) => String::from_utf8(bytes).map_err(|_| ShellError::Input {
                    what: "stdin".into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the input is not UTF-8",
                    ),
                }),
                Err(e) => Err(ShellError::Input {
                    what: "stdin".into(),
                    source: e,
                }),
            };
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// A command of the shell itself rather than SQL.
#[derive(Debug, PartialEq, Eq)]
enum Meta {
    Quit,
    Help,
    Unknown(String),
}

/// The shell command on `line`, if it is one (only looked for at the start of a statement).
fn meta_command(line: &str) -> Option<Meta> {
    let t = line.trim();
    let t = t.strip_suffix(';').unwrap_or(t).trim_end();
    match t.to_ascii_lowercase().as_str() {
        "\\q" | "quit" | "exit" => Some(Meta::Quit),
        "\\h" | "\\?" | "help" => Some(Meta::Help),
        _ if t.starts_with('\\') => Some(Meta::Unknown(t.to_string())),
        _ => None,
    }
}

/// `~/.streamcell_history`, or none without a home directory.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(HISTORY_FILE))
}

/// The interactive shell: prompts until `\q` or Ctrl-D. Failed statements are reported and
/// the shell goes on, so the exit code is 0 unless the terminal itself fails.
fn interactive(rt: &Runtime, mut conn: Connection) -> ExitCode {
    let config = Config::builder()
        .max_history_size(HISTORY_SIZE)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| b.auto_add_history(false).build());
    let mut editor = match config.and_then(DefaultEditor::with_config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("streamcell sql: cannot set up the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut history = history_path();
    if let Some(path) = &history {
        if path.exists() {
            if let Err(e) = editor.load_history(path) {
                eprintln!(
                    "streamcell sql: cannot read the history {}: {e}",
                    path.display()
                );
            }
        }
    }
    println!(
        "StreamCell {} SQL shell, server {}. Statements end with ';'; \\h for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        conn.addr()
    );
    let mut out = std::io::BufWriter::new(std::io::stdout());
    // Say at once if the server is not there; statements try again.
    match rt.block_on(cancellable(async { conn.connect().await.map(|_| ()) })) {
        Ok(()) | Err(ShellError::Interrupted) => {}
        Err(e) => eprintln!("{e}"),
    }
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            PROMPT
        } else {
            CONTINUATION_PROMPT
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C at the prompt drops what was typed.
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("streamcell sql: cannot read the input: {e}");
                return ExitCode::FAILURE;
            }
        };
        if buffer.is_empty() {
            if let Some(meta) = meta_command(&line) {
                remember(&mut editor, &mut history, line.trim());
                match meta {
                    Meta::Quit => break,
                    Meta::Help => println!("{HELP}"),
                    Meta::Unknown(cmd) => {
                        eprintln!("unknown command {cmd}: \\h lists the commands")
                    }
                }
                continue;
            }
        }
        buffer.push_str(&line);
        buffer.push('\n');
        let split = scanner::split(&buffer);
        let done_len = buffer.len() - split.rest.len();
        let entered = buffer[..done_len].trim();
        if !entered.is_empty() {
            remember(&mut editor, &mut history, entered);
        }
        buffer = if split.pending {
            split.rest
        } else {
            String::new()
        };
        for stmt in &split.statements {
            match rt.block_on(cancellable(conn.execute(stmt, &mut out))) {
                Ok(()) => {}
                Err(e) => {
                    // Rows printed before the error or Ctrl-C come first; the rest of the
                    // statements entered with this one are not run.
                    let _ = out.flush();
                    match e {
                        // After the terminal's "^C".
                        ShellError::Interrupted => eprintln!("\nCancelled."),
                        e => eprintln!("{e}"),
                    }
                    break;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// Adds `entry` to the history and appends it to the history file. A file that cannot be
/// written is reported once and then left alone.
fn remember(editor: &mut DefaultEditor, history: &mut Option<PathBuf>, entry: &str) {
    // Only fails when writing a file, which add_history_entry does not do.
    if !editor.add_history_entry(entry).unwrap_or(false) {
        return;
    }
    if let Some(path) = history.as_ref() {
        if let Err(e) = editor.append_history(path) {
            eprintln!(
                "streamcell sql: cannot write the history {} ({e}); history is not saved",
                path.display()
            );
            *history = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_commands() {
        assert_eq!(meta_command("\\q"), Some(Meta::Quit));
        assert_eq!(meta_command("  quit; "), Some(Meta::Quit));
        assert_eq!(meta_command("EXIT"), Some(Meta::Quit));
        assert_eq!(meta_command("\\h"), Some(Meta::Help));
        assert_eq!(meta_command("help"), Some(Meta::Help));
        assert_eq!(meta_command("\\x"), Some(Meta::Unknown("\\x".into())));
        assert_eq!(meta_command("SELECT 1;"), None);
        assert_eq!(meta_command("quit_table"), None);
        assert_eq!(meta_command(""), None);
    }

    #[test]
    fn whole_texts_run_their_last_statement_without_semicolon() {
        assert_eq!(statements("SELECT 1; SELECT 2"), ["SELECT 1;", "SELECT 2"]);
        assert_eq!(statements("SELECT 1;\n-- end\n"), ["SELECT 1;"]);
        assert_eq!(statements("  "), Vec::<String>::new());
        assert_eq!(statements("SELECT 'open"), ["SELECT 'open"]);
    }

    #[test]
    fn prompts_line_up() {
        assert_eq!(PROMPT.len(), CONTINUATION_PROMPT.len());
    }
}
