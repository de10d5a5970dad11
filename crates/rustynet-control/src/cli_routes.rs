//! The `routes` and `acl` subcommands of the `rustynet-control` binary
//! (kept apart from `main.rs` so each command family reads on its own).

use std::path::PathBuf;

use clap::Subcommand;
use rustynet_control::datadir::DataDir;
use rustynet_control::store::DatabaseUrl;
use rustynet_control::{acl_explain, routes};

#[derive(Subcommand)]
pub enum RoutesAction {
    /// Advertised routes and admin decisions, with whether each is approved and why.
    List {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Approve a route of a node (takes effect when it is advertised).
    Approve {
        /// The node's host label.
        node: String,
        /// The prefix; advertised routes inside it are approved.
        cidr: String,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Reject a route of a node: no route overlapping it is approved,
    /// whatever `route_approvers` or the exit role say.
    Reject {
        /// The node's host label.
        node: String,
        /// The prefix.
        cidr: String,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AclAction {
    /// Which rule admits SRC -> DST[:PORT], or why none does.
    Explain {
        /// Source: a node name or an address.
        src: String,
        /// Destination: a node name or an address, optionally with :PORT.
        dst: String,
        /// tcp, udp, icmp or a protocol number (default: each of tcp, udp, icmp).
        #[arg(long)]
        proto: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn run_routes(action: RoutesAction, db: &Option<DatabaseUrl>) -> anyhow::Result<()> {
    match action {
        RoutesAction::List { data_dir, json } => {
            let rows = routes::list(&DataDir::new(data_dir).with_database(db.clone()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("NODE                     PREFIX               ADVERTISED  ADMIN     STATUS");
            for r in rows {
                println!(
                    "{:<24} {:<20} {:<11} {:<9} {}",
                    r.node,
                    r.prefix.to_string(),
                    if r.advertised { "yes" } else { "no" },
                    r.admin.unwrap_or("-"),
                    r.status
                );
            }
        }
        RoutesAction::Approve {
            node,
            cidr,
            data_dir,
            json,
        } => decided(
            routes::decide(
                &DataDir::new(data_dir).with_database(db.clone()),
                &node,
                &cidr,
                true,
            )?,
            json,
        )?,
        RoutesAction::Reject {
            node,
            cidr,
            data_dir,
            json,
        } => decided(
            routes::decide(
                &DataDir::new(data_dir).with_database(db.clone()),
                &node,
                &cidr,
                false,
            )?,
            json,
        )?,
    }
    Ok(())
}

fn decided(d: routes::Decision, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        println!("{}", d.message);
    }
    Ok(())
}

/// Runs `acl explain`; with several protocols explained, succeeds when the
/// answers could be given (a DENY is an answer, not an error).
pub fn run_acl(action: AclAction, db: &Option<DatabaseUrl>) -> anyhow::Result<()> {
    let AclAction::Explain {
        src,
        dst,
        proto,
        data_dir,
        json,
    } = action;
    let answers = acl_explain::explain(
        &DataDir::new(data_dir).with_database(db.clone()),
        &src,
        &dst,
        proto.as_deref(),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
    } else {
        for ex in &answers {
            print!("{}", acl_explain::render(ex));
        }
    }
    Ok(())
}
