//! `up`: the flags it sends, the check that a re-`up` does not silently
//! drop settings an earlier `up` made, and `--wait`.
//!
//! Like `tailscale up`, a re-`up` must name every non-default setting it
//! keeps: `rustynet up` after `rustynet up --advertise-exit-node` would
//! otherwise stop offering the exit without a word. It is refused with the
//! full command to run instead (or `--reset` to drop them on purpose).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rustynet_proto::control_api::SecretString;
use rustynet_proto::ipc::{Command, DataplaneState, Reply, StatusDoc, UpArgs};

use crate::client;
use crate::error::CliError;

/// `up`'s flags as typed (before the CA and key files are read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpFlags {
    /// `--control`: one URL, or several comma-separated.
    pub control: Option<String>,
    /// `--ca-cert`.
    pub ca_cert: Option<PathBuf>,
    /// `--auth-key` was given (its value is never echoed).
    pub auth_key: bool,
    /// `--auth-key-file`.
    pub auth_key_file: Option<PathBuf>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--advertise-exit-node[=BOOL]` (`None`: not given).
    pub advertise_exit_node: Option<bool>,
    /// `--advertise-routes` (`None`: not given).
    pub advertise_routes: Option<Vec<IpNet>>,
    /// `--snat-subnet-routes[=BOOL]` (`None`: not given).
    pub snat_subnet_routes: Option<bool>,
    /// `--force-reauth`.
    pub force_reauth: bool,
    /// `--reset`.
    pub reset: bool,
    /// `--wait`.
    pub wait: bool,
    /// `--timeout` as typed.
    pub timeout: Option<String>,
}

/// The settings an earlier `up` (or `route advertise`) left in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Offering to be an exit node.
    pub advertise_exit_node: bool,
    /// LAN prefixes offered.
    pub advertise_routes: Vec<IpNet>,
    /// Forwarded clients masqueraded (the default).
    pub snat_subnet_routes: bool,
}

impl Default for Current {
    fn default() -> Self {
        Self {
            advertise_exit_node: false,
            advertise_routes: vec![],
            snat_subnet_routes: true,
        }
    }
}

impl Current {
    /// From `status`.
    pub fn of(status: &StatusDoc) -> Self {
        Self {
            advertise_exit_node: status.advertise_exit_node,
            advertise_routes: status.advertised_routes.clone(),
            snat_subnet_routes: status.snat_subnet_routes,
        }
    }
}

/// Refuses an `up` that would drop a setting in force that it does not
/// name; the error carries the full command keeping them all.
pub fn check_dropped(current: &Current, flags: &UpFlags) -> Result<(), CliError> {
    if flags.reset {
        return Ok(());
    }
    let mut dropped = Vec::new();
    let mut keep = flags.clone();
    if current.advertise_exit_node && flags.advertise_exit_node.is_none() {
        dropped.push("--advertise-exit-node");
        keep.advertise_exit_node = Some(true);
    }
    if !current.advertise_routes.is_empty() && flags.advertise_routes.is_none() {
        dropped.push("--advertise-routes");
        keep.advertise_routes = Some(current.advertise_routes.clone());
    }
    if !current.snat_subnet_routes && flags.snat_subnet_routes.is_none() {
        dropped.push("--snat-subnet-routes=false");
        keep.snat_subnet_routes = Some(false);
    }
    if dropped.is_empty() {
        return Ok(());
    }
    Err(CliError::new(
        "flags_would_be_dropped",
        format!(
            "`rustynet up` must name every setting it keeps; this one would drop {}. \
             To keep them run `{}`, or add --reset to drop them",
            dropped.join(" and "),
            command_line(&keep)
        ),
    ))
}

/// `flags` as a command line (the auth key as a placeholder, never its value).
pub fn command_line(flags: &UpFlags) -> String {
    let mut out = vec!["rustynet up".to_owned()];
    if let Some(c) = &flags.control {
        out.push(format!("--control {c}"));
    }
    if let Some(c) = &flags.ca_cert {
        out.push(format!("--ca-cert {}", c.display()));
    }
    if flags.auth_key {
        out.push("--auth-key KEY".into());
    }
    if let Some(f) = &flags.auth_key_file {
        out.push(format!("--auth-key-file {}", f.display()));
    }
    if let Some(h) = &flags.hostname {
        out.push(format!("--hostname {h}"));
    }
    match flags.advertise_exit_node {
        Some(true) => out.push("--advertise-exit-node".into()),
        Some(false) => out.push("--advertise-exit-node=false".into()),
        None => {}
    }
    if let Some(routes) = flags.advertise_routes.as_ref().filter(|r| !r.is_empty()) {
        let list: Vec<String> = routes.iter().map(ToString::to_string).collect();
        out.push(format!("--advertise-routes {}", list.join(",")));
    }
    match flags.snat_subnet_routes {
        Some(true) => out.push("--snat-subnet-routes".into()),
        Some(false) => out.push("--snat-subnet-routes=false".into()),
        None => {}
    }
    if flags.force_reauth {
        out.push("--force-reauth".into());
    }
    if flags.wait {
        out.push("--wait".into());
    }
    if let Some(t) = &flags.timeout {
        out.push(format!("--timeout {t}"));
    }
    out.join(" ")
}

/// `--control` as given (each occurrence may itself list several URLs) as
/// the one comma-separated list the daemon checks; `None` when not given.
pub fn control_list(given: &[String]) -> Option<String> {
    let list: Vec<&str> = given.iter().map(|c| c.trim()).collect();
    (!list.is_empty()).then(|| list.join(","))
}

/// The request: the CA and key files read, empty control URL and CA for
/// "the saved ones".
fn up_args(flags: &UpFlags, auth_key: Option<String>) -> anyhow::Result<UpArgs> {
    let ca_cert_pem = match &flags.ca_cert {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::new(
                "invalid_argument",
                format!("--ca-cert {}: {e}", path.display()),
            )
        })?,
        None => String::new(),
    };
    let auth_key = match (auth_key, &flags.auth_key_file) {
        (Some(k), _) => Some(SecretString::new(k)),
        (None, Some(path)) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    "invalid_argument",
                    format!("--auth-key-file {}: {e}", path.display()),
                )
            })?);
            Some(SecretString::new(text.trim().to_owned()))
        }
        (None, None) => None,
    };
    Ok(UpArgs {
        control_url: flags.control.clone().unwrap_or_default(),
        ca_cert_pem,
        auth_key,
        hostname: flags.hostname.clone(),
        advertise_exit_node: flags.advertise_exit_node.unwrap_or(false),
        advertise_routes: flags.advertise_routes.clone().unwrap_or_default(),
        force_reauth: flags.force_reauth,
        no_snat_subnet_routes: flags.snat_subnet_routes == Some(false),
    })
}

fn status(socket: &Path) -> anyhow::Result<StatusDoc> {
    match client::call(socket, Command::Status)? {
        Reply::Status(s) => Ok(s),
        _ => Err(CliError::new("protocol", "rustynetd answered status with something else").into()),
    }
}

/// `up`: refuses to drop earlier settings silently, sends the request,
/// then with `--wait` polls `status` until the dataplane is applied.
pub fn run(
    socket: &Path,
    json: bool,
    flags: &UpFlags,
    auth_key: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    // Checked against what the daemon holds; a daemon that does not answer
    // fails the `up` below with its own error.
    if let Ok(current) = status(socket) {
        check_dropped(&Current::of(&current), flags)?;
    }
    let args = up_args(flags, auth_key)?;
    let message = match client::call(socket, Command::Up(args))? {
        Reply::Done { message } => message,
        _ => {
            return Err(
                CliError::new("protocol", "rustynetd answered up with something else").into(),
            );
        }
    };
    if !flags.wait {
        if json {
            println!("{}", serde_json::json!({ "message": message }));
        } else {
            println!("{message}");
        }
        return Ok(());
    }
    if !json {
        println!("{message}");
    }
    let state = wait(timeout, || status(socket))?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "message": message, "state": state.as_str() })
        );
    } else {
        println!("connected: {}", state.as_str());
    }
    Ok(())
}

/// Where `--wait` stands after one `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitVerdict {
    /// The dataplane is applied (with or without an exit node).
    Ready(DataplaneState),
    /// Failing closed with a reason: waiting longer will not help by itself.
    Failed(String),
    /// Not yet.
    Pending,
}

/// Judges one `status` while waiting. Failing closed without a reason is
/// the restricted start every `up` goes through (or a node that was
/// refused and re-enrolls, whose old error `up` cleared): keep waiting.
pub fn wait_verdict(status: &StatusDoc) -> WaitVerdict {
    match (status.state, &status.error) {
        (s @ (DataplaneState::DataplaneApplied | DataplaneState::ExitActive), _) => {
            WaitVerdict::Ready(s)
        }
        (DataplaneState::FailClosed, Some(e)) => WaitVerdict::Failed(e.clone()),
        _ => WaitVerdict::Pending,
    }
}

/// Polls `status` until the dataplane is applied, it fails closed, or
/// `timeout` passes.
pub fn wait(
    timeout: Duration,
    mut status: impl FnMut() -> anyhow::Result<StatusDoc>,
) -> anyhow::Result<DataplaneState> {
    let started = Instant::now();
    loop {
        let doc = status()?;
        match wait_verdict(&doc) {
            WaitVerdict::Ready(state) => return Ok(state),
            WaitVerdict::Failed(e) => {
                return Err(
                    CliError::new("fail_closed", format!("up: failing closed: {e}")).into(),
                );
            }
            WaitVerdict::Pending => {}
        }
        if started.elapsed() >= timeout {
            return Err(CliError::new(
                "timeout",
                format!(
                    "up: dataplane not applied after {} (state {}{})",
                    humantime::format_duration(timeout),
                    doc.state.as_str(),
                    doc.error.map(|e| format!(", {e}")).unwrap_or_default()
                ),
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn routes(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn bare_up_after_exit_node_and_routes_is_refused_with_the_full_command() {
        let current = Current {
            advertise_exit_node: true,
            advertise_routes: routes(&["192.168.77.0/24", "10.9.0.0/16"]),
            ..Default::default()
        };
        let err = check_dropped(&current, &UpFlags::default()).unwrap_err();
        assert_eq!(err.code, "flags_would_be_dropped");
        assert!(
            err.message.contains(
                "run `rustynet up --advertise-exit-node --advertise-routes 192.168.77.0/24,10.9.0.0/16`"
            ),
            "{}",
            err.message
        );
        assert!(!err.message.contains('\n'), "one line: {}", err.message);
        assert!(err.message.contains("--reset"), "{}", err.message);
    }

    #[test]
    fn the_suggested_command_keeps_what_was_typed_and_hides_the_key() {
        let current = Current {
            advertise_exit_node: true,
            ..Default::default()
        };
        let flags = UpFlags {
            control: Some("https://ctl.example".into()),
            ca_cert: Some("/etc/rustynet/ca.pem".into()),
            auth_key: true,
            hostname: Some("laptop".into()),
            wait: true,
            ..Default::default()
        };
        let err = check_dropped(&current, &flags).unwrap_err();
        assert!(
            err.message.contains(
                "rustynet up --control https://ctl.example --ca-cert /etc/rustynet/ca.pem \
                 --auth-key KEY --hostname laptop --advertise-exit-node --wait"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn naming_a_setting_or_reset_or_nothing_in_force_goes_ahead() {
        let current = Current {
            advertise_exit_node: true,
            advertise_routes: routes(&["192.168.77.0/24"]),
            ..Default::default()
        };
        // Named, even with a new value: explicit.
        let named = UpFlags {
            advertise_exit_node: Some(false),
            advertise_routes: Some(routes(&["10.1.0.0/16"])),
            ..Default::default()
        };
        assert_eq!(check_dropped(&current, &named), Ok(()));
        let reset = UpFlags {
            reset: true,
            ..Default::default()
        };
        assert_eq!(check_dropped(&current, &reset), Ok(()));
        assert_eq!(
            check_dropped(&Current::default(), &UpFlags::default()),
            Ok(())
        );
        // Only the route is missing: only it is named as dropped.
        let half = UpFlags {
            advertise_exit_node: Some(true),
            ..Default::default()
        };
        let err = check_dropped(&current, &half).unwrap_err();
        assert!(
            err.message.contains("would drop --advertise-routes. "),
            "{}",
            err.message
        );
    }

    #[test]
    fn keeping_client_sources_must_be_named_again() {
        let current = Current {
            snat_subnet_routes: false,
            ..Default::default()
        };
        let err = check_dropped(&current, &UpFlags::default()).unwrap_err();
        assert!(
            err.message
                .contains("run `rustynet up --snat-subnet-routes=false`"),
            "{}",
            err.message
        );
        let named = UpFlags {
            snat_subnet_routes: Some(true),
            ..Default::default()
        };
        assert_eq!(check_dropped(&current, &named), Ok(()));
        let args = up_args(
            &UpFlags {
                snat_subnet_routes: Some(false),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(args.no_snat_subnet_routes);
        assert!(!up_args(&named, None).unwrap().no_snat_subnet_routes);
    }

    fn status(state: DataplaneState, error: Option<&str>) -> StatusDoc {
        StatusDoc {
            state,
            self_node: None,
            peers: vec![],
            exit_node: None,
            lan_access: false,
            local_lan: false,
            lockdown: false,
            generation: 0,
            backend: String::new(),
            kill_switch: false,
            dns_protected: false,
            dns_mode: String::new(),
            daemon_version: String::new(),
            error: error.map(str::to_owned),
            advertised_routes: vec![],
            advertise_exit_node: false,
            snat_subnet_routes: true,
            counters: Default::default(),
            relays: vec![],
            control: Default::default(),
        }
    }

    #[test]
    fn wait_verdicts() {
        use DataplaneState::*;
        assert_eq!(
            wait_verdict(&status(DataplaneApplied, None)),
            WaitVerdict::Ready(DataplaneApplied)
        );
        assert_eq!(
            wait_verdict(&status(ExitActive, None)),
            WaitVerdict::Ready(ExitActive)
        );
        for pending in [Init, ControlTrusted, FailClosed] {
            assert_eq!(wait_verdict(&status(pending, None)), WaitVerdict::Pending);
        }
        assert_eq!(
            wait_verdict(&status(FailClosed, Some("control refused this node"))),
            WaitVerdict::Failed("control refused this node".into())
        );
    }

    #[test]
    fn wait_returns_when_applied_and_fails_on_fail_closed_or_timeout() {
        let mut seq = vec![
            status(DataplaneState::DataplaneApplied, None),
            status(DataplaneState::ControlTrusted, None),
            status(DataplaneState::FailClosed, None),
        ];
        let got = wait(Duration::from_secs(10), || Ok(seq.pop().unwrap())).unwrap();
        assert_eq!(got, DataplaneState::DataplaneApplied);

        let err = wait(Duration::from_secs(10), || {
            Ok(status(
                DataplaneState::FailClosed,
                Some("signed map expired"),
            ))
        })
        .unwrap_err();
        assert_eq!(crate::error::parts(&err).0, "fail_closed");

        let err = wait(Duration::from_millis(300), || {
            Ok(status(
                DataplaneState::ControlTrusted,
                Some("apply failed at step dns"),
            ))
        })
        .unwrap_err();
        let (code, message) = crate::error::parts(&err);
        assert_eq!(code, "timeout");
        assert!(
            message.contains("control_trusted, apply failed at step dns"),
            "{message}"
        );
    }
}
