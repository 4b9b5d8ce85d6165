//! `origin tenants create|list|show|delete|rotate-key|set-model`: the registry from the command
//! line, on whichever store `--db` names (the binary opens it with
//! `store::open_tenants` and hands it here). Text by default, `--json` for scripts.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use contract::Tenant as TenantId;
use thiserror::Error;

use super::keys::{KeyKind, DEFAULT_OVERLAP_S};
use super::registry::{TenantError, Tenants};
use super::tenant::{ModelSetting, NewTenant, Quotas, Tenant};
use crate::clock::rfc3339;

#[derive(Debug, Clone, Args)]
pub struct TenantsArgs {
    /// The store holding the registry: a SQLite file (a path or `sqlite://PATH`) or a
    /// PostgreSQL URL (`postgres://…`).
    #[arg(
        long,
        env = "ORIGIN_DB",
        default_value = "var/origin.sqlite",
        global = true
    )]
    pub db: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TenantsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// Register a tenant; prints its client and server keys, shown this once.
    Create(CreateArgs),
    /// List the tenants.
    List,
    /// Show a tenant: name, quotas, and its keys' kinds and hints (never the keys).
    Show { id: String },
    /// Remove a tenant: its registry entry, its keys, and its rows in every table of
    /// the store keyed by tenant; prints what it removed.
    Delete {
        id: String,
        /// Confirms the deletion (it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
    /// Issue a new key of a kind; the tenant's old key of that kind stays valid for
    /// `--overlap-s` seconds more, then fails.
    RotateKey {
        id: String,
        #[arg(value_parser = ["client", "server"])]
        kind: String,
        /// How long the replaced key stays valid, in seconds (0: not at all; at most
        /// 30 days).
        #[arg(long, default_value_t = DEFAULT_OVERLAP_S)]
        overlap_s: u64,
    },
    /// Set the model the tenant's recommendations train (what `--model` accepts: a
    /// name, a JSON spec, or `auto`), or `default` for the origin's `--model`. Serving
    /// origins retrain the tenant with it when they next load it (at once on the origin
    /// whose admin route sets it).
    SetModel { id: String, model: String },
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The tenant id (1 to 64 of `a-z 0-9 _ -`, starting with a letter or digit).
    pub id: String,
    /// The display name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// Origin requests per second (a token bucket; enforced by the tenant's `origin serve`).
    #[arg(long)]
    pub requests_per_second: Option<u64>,
    /// Events per UTC day, impressions aside (enforced by the tenant's `origin serve`).
    #[arg(long)]
    pub events_per_day: Option<u64>,
    /// Users stored, at most (enforced by the tenant's `origin serve`).
    #[arg(long)]
    pub max_users: Option<u64>,
    /// Items stored, at most (enforced by the tenant's `origin serve`).
    #[arg(long)]
    pub max_items: Option<u64>,
    /// The model its recommendations train (default: the origin's `--model`).
    #[arg(long)]
    pub model: Option<String>,
}

impl CreateArgs {
    fn quotas(&self) -> Quotas {
        let d = Quotas::default();
        Quotas {
            requests_per_second: self.requests_per_second.unwrap_or(d.requests_per_second),
            events_per_day: self.events_per_day.unwrap_or(d.events_per_day),
            max_users: self.max_users.unwrap_or(d.max_users),
            max_items: self.max_items.unwrap_or(d.max_items),
        }
    }
}

/// Why a `tenants` command failed.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    InvalidId(#[from] contract::IdError),
    #[error("deleting tenant {0} removes all its data and cannot be undone: add --yes")]
    NotConfirmed(TenantId),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn time(unix_s: i64) -> String {
    rfc3339(u64::try_from(unix_s).unwrap_or(0))
}

fn quotas_line(q: &Quotas) -> String {
    format!(
        "{} requests/s, {} events/day, {} users, {} items",
        q.requests_per_second, q.events_per_day, q.max_users, q.max_items
    )
}

fn json(value: &impl serde::Serialize) -> Result<String, CliError> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Runs one command against `tenants` at `now` (unix seconds) and gives what to print.
pub async fn run(args: &TenantsArgs, tenants: &Tenants, now: i64) -> Result<String, CliError> {
    let mut out = String::new();
    match &args.command {
        TenantsCommand::Create(c) => {
            let mut new = NewTenant::parse(&c.id, c.name.as_deref(), c.quotas())
                .map_err(TenantError::from)?;
            new.model = c
                .model
                .as_deref()
                .map(ModelSetting::parse)
                .transpose()
                .map_err(|e| TenantError::from(super::tenant::InvalidTenant::from(e)))?;
            let created = tenants.create(new, now).await?;
            if args.json {
                return json(&created);
            }
            let t = &created.tenant;
            let _ = writeln!(
                out,
                "created tenant {} ({:?}) at {}\nquotas: {}\n\
                 client key (public, may sit in a web page): {}\n\
                 server key (secret, keep it on servers):    {}\n\
                 Keep both now: they are not shown again (the registry stores only their SHA-256).",
                t.id,
                t.name.as_str(),
                time(t.created_at),
                quotas_line(&t.quotas),
                created.client_key.expose(),
                created.server_key.expose(),
            );
        }
        TenantsCommand::List => {
            let all = tenants.list().await?;
            if args.json {
                return json(&all);
            }
            if all.is_empty() {
                let _ = writeln!(out, "no tenants in {}", tenants.location());
            }
            for Tenant {
                id,
                name,
                created_at,
                ..
            } in &all
            {
                let _ = writeln!(out, "{id:<24} {}  {:?}", time(*created_at), name.as_str());
            }
        }
        TenantsCommand::Show { id } => {
            let view = tenants.show(&TenantId::parse(id)?, now).await?;
            if args.json {
                return json(&view);
            }
            let t = &view.tenant;
            let _ = writeln!(
                out,
                "tenant {}\nname: {:?}\ncreated: {}\nquotas: {}\nmodel: {}\nkeys:",
                t.id,
                t.name.as_str(),
                time(t.created_at),
                quotas_line(&t.quotas),
                t.model
                    .as_ref()
                    .map_or("the origin's --model", |m| m.as_str())
            );
            for k in &view.keys {
                let until = k.expires_at.map_or("valid until rotated".to_owned(), |u| {
                    format!("replaced, valid until {}", time(u))
                });
                let _ = writeln!(
                    out,
                    "  {:<6} {}…  issued {}, {until}",
                    k.kind.as_str(),
                    k.hint,
                    time(k.created_at)
                );
            }
        }
        TenantsCommand::Delete { id, yes } => {
            let id = TenantId::parse(id)?;
            if !yes {
                return Err(CliError::NotConfirmed(id));
            }
            let report = tenants.delete(&id).await?;
            if args.json {
                return json(&report);
            }
            let _ = writeln!(
                out,
                "deleted tenant {} from {}; rows removed per table:",
                id,
                tenants.location()
            );
            for r in &report.removed {
                let _ = writeln!(out, "  {:<24} {}", r.table, r.rows);
            }
            if let Some(kept) = &report.kept {
                let _ = writeln!(out, "not removed: {kept}");
            }
        }
        TenantsCommand::RotateKey {
            id,
            kind,
            overlap_s,
        } => {
            let kind = KeyKind::parse(kind).map_err(TenantError::from)?;
            let rotated = tenants
                .rotate_key(&TenantId::parse(id)?, kind, now, *overlap_s)
                .await?;
            if args.json {
                return json(&rotated);
            }
            let _ = writeln!(
                out,
                "new {kind} key for tenant {}: {}\n\
                 the replaced {kind} key stays valid until {} ({overlap_s} s)\n\
                 Keep it now: it is not shown again.",
                rotated.tenant,
                rotated.key.expose(),
                time(rotated.previous_valid_until),
            );
        }
        TenantsCommand::SetModel { id, model } => {
            let id = TenantId::parse(id)?;
            let setting = match model.trim() {
                "default" => None,
                m => Some(
                    ModelSetting::parse(m)
                        .map_err(|e| TenantError::from(super::tenant::InvalidTenant::from(e)))?,
                ),
            };
            tenants.set_model(&id, setting.as_ref()).await?;
            let view = tenants.show(&id, now).await?;
            if args.json {
                return json(&view.tenant);
            }
            let _ = writeln!(
                out,
                "tenant {id} now trains {}",
                setting
                    .as_ref()
                    .map_or("the origin's --model", |m| m.as_str())
            );
        }
    }
    Ok(out)
}
