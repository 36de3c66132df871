//! The set of running services: start, reload (SIGHUP), shut down. Each
//! service listens in every shard (see `main.rs`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::task::{Context, Waker};

use monconn::{CloseReport, Registry};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::cli::Accept;
use crate::config::{self, ServiceSpec};
use crate::service::{apply_config, bind, Running};
use crate::stats;

/// The running services, by sid.
#[derive(Debug)]
pub struct Forwarder {
    registry: Registry,
    /// The runtimes that accept and forward connections, one per thread.
    shards: Vec<Handle>,
    /// How they share each service's new connections.
    accept: Accept,
    running: BTreeMap<String, Running>,
    /// The `-p` services: kept as they are across reloads.
    flags: Vec<ServiceSpec>,
    config_path: Option<PathBuf>,
}

/// A config file being loaded by [`Forwarder::load`]: its services, or why
/// it cannot be used.
pub type Loading = JoinHandle<Result<Vec<ServiceSpec>, String>>;

/// The end of every reload error: nothing was changed.
pub fn kept(e: String) -> String {
    format!("{e}; the running config stays")
}

/// Every service to run: the file's and the `-p` ones, checked for conflicts.
pub fn load_specs(
    config_path: Option<&std::path::Path>,
    flags: &[ServiceSpec],
) -> Result<Vec<ServiceSpec>, String> {
    let mut specs = match config_path {
        Some(path) => config::load(path)?,
        None => Vec::new(),
    };
    specs.extend(flags.iter().cloned());
    config::check_conflicts(&specs)?;
    Ok(specs)
}

impl Forwarder {
    /// Binds every service's address, then starts them all.
    ///
    /// # Errors
    /// The first address that cannot be bound; nothing is started then.
    pub fn start(
        registry: Registry,
        shards: Vec<Handle>,
        accept: Accept,
        specs: Vec<ServiceSpec>,
        flags: Vec<ServiceSpec>,
        config_path: Option<PathBuf>,
    ) -> Result<Self, String> {
        let mut bound = Vec::with_capacity(specs.len());
        for spec in specs {
            let tcp = bind(&spec.listen, shards.len(), accept)
                .map_err(|e| format!("service `{}`: {e}", spec.sid))?;
            bound.push((spec, tcp));
        }
        let mut forwarder = Forwarder {
            registry,
            shards,
            accept,
            running: BTreeMap::new(),
            flags,
            config_path,
        };
        for (spec, tcp) in bound {
            forwarder.launch(spec, tcp)?;
        }
        Ok(forwarder)
    }

    fn launch(&mut self, spec: ServiceSpec, tcp: Vec<TcpListener>) -> Result<(), String> {
        let service = self
            .registry
            .create(&spec.sid, spec.config.clone())
            .unwrap();
        crate::backend_errors::fresh(&spec.sid);
        let sid = spec.sid.clone();
        let running = Running::start(spec, service, tcp, &self.shards, self.accept)
            .map_err(|e| format!("service `{sid}`: {e}"))?;
        self.running.insert(sid, running);
        Ok(())
    }

    /// How many services are running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no service is running.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts loading the config file for a reload (SIGHUP): reading,
    /// parsing and checking run on a blocking thread, so that a big file
    /// holds up no shard, no admin request and no signal. Hand the result
    /// to [`Forwarder::apply`].
    ///
    /// # Errors
    /// No config file to reload.
    pub fn load(&self) -> Result<Loading, String> {
        let Some(path) = self.config_path.clone() else {
            return Err("no config file to reload (start with -c FILE)".into());
        };
        let flags = self.flags.clone();
        Ok(tokio::task::spawn_blocking(move || {
            load_specs(Some(&path), &flags).map_err(kept)
        }))
    }

    /// Applies a loaded config: starts new services, drains and stops
    /// removed ones, moves services whose address changed, applies new
    /// settings and backends to the others. Untouched services and all live
    /// connections go on.
    ///
    /// # Errors
    /// An address that cannot be bound: nothing changed then.
    pub async fn apply(&mut self, specs: Vec<ServiceSpec>) -> Result<(), String> {
        let mut new: BTreeMap<String, ServiceSpec> =
            specs.into_iter().map(|s| (s.sid.clone(), s)).collect();

        // Bind the addresses none of our listeners holds first, so that a
        // failure leaves everything as it was.
        let moves = |sid: &str, spec: &ServiceSpec| {
            self.running
                .get(sid)
                .is_none_or(|r| r.spec.listen != spec.listen || r.spec.proxy_in != spec.proxy_in)
        };
        let mut bound: HashMap<String, Vec<TcpListener>> = HashMap::new();
        for (sid, spec) in &new {
            let ours = self
                .running
                .values()
                .any(|r| r.spec.listen.overlaps(&spec.listen));
            if moves(sid, spec) && !ours {
                let tcp = bind(&spec.listen, self.shards.len(), self.accept)
                    .map_err(|e| kept(format!("service `{sid}`: {e}")))?;
                bound.insert(sid.clone(), tcp);
            }
        }

        // Stop accepting on the listeners of removed and moved services.
        let leaving: Vec<String> = self
            .running
            .iter()
            .filter(|(sid, r)| {
                // A new accept stack (proxy_protocol) takes a new listener.
                new.get(*sid).is_none_or(|spec| {
                    spec.listen != r.spec.listen || spec.proxy_in != r.spec.proxy_in
                })
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        let mut moved = HashMap::new();
        for sid in leaving {
            let running = self.running.remove(&sid).expect("listed above");
            let (old, service) = running.stop_accepting().await;
            if new.contains_key(&sid) {
                moved.insert(sid, (old, service));
            } else {
                tracing::info!(%sid, "service removed from the config; draining");
                self.remove_now(sid);
            }
        }

        // Update the services that stay where they are.
        for (sid, running) in &mut self.running {
            let spec = new.remove(sid).expect("the others left above");
            if spec != running.spec {
                tracing::info!(%sid, "service settings changed");
                running.update(spec).await;
            }
        }

        // Start the new and moved ones.
        let mut errors = Vec::new();
        for (sid, spec) in new {
            let tcp = match bound.remove(&sid) {
                Some(tcp) => tcp,
                None => match bind(&spec.listen, self.shards.len(), self.accept) {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        errors.push(format!("service `{sid}`: {e}"));
                        continue;
                    }
                },
            };
            let service = match moved.remove(&sid) {
                Some((old, service)) => {
                    apply_config(&service, old.config, spec.config.clone()).await;
                    service
                }
                None => {
                    // Compiling a big list takes a while: off the runtime.
                    let (registry, config) = (self.registry.clone(), spec.config.clone());
                    let id = sid.clone();
                    match tokio::task::spawn_blocking(move || registry.create(&id, config).unwrap())
                        .await
                    {
                        Ok(service) => {
                            crate::backend_errors::fresh(&sid);
                            service
                        }
                        Err(e) => {
                            errors.push(format!("service `{sid}`: {e}"));
                            continue;
                        }
                    }
                }
            };
            match Running::start(spec, service, tcp, &self.shards, self.accept) {
                Ok(running) => {
                    self.running.insert(sid, running);
                }
                Err(e) => errors.push(format!("service `{sid}`: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("applied, except: {}", errors.join("; ")))
        }
    }

    /// Takes `sid` out of the registry now and drains it in the background,
    /// so that the sid is free at once and its connections may finish.
    /// Until they have, `/stats` lists it under `draining`.
    fn remove_now(&self, sid: String) {
        let registry = self.registry.clone();
        let mut drain = Box::pin(async move {
            let backend_errors = crate::backend_errors::take(&sid);
            let _listed = registry
                .get(&sid)
                .map(|service| stats::Draining::list(service, backend_errors));
            if let Some(report) = registry.remove(&sid).await {
                tracing::info!(%sid, drained = report.drained, cut = report.cut, "service stopped");
            }
        });
        // The first poll removes the entry; the task does the waiting.
        let mut cx = Context::from_waker(Waker::noop());
        if drain.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(drain);
        }
    }

    /// Stops every listener, then drains every service for up to its
    /// `wait_timeout`. Returns each sid with what the drain did.
    pub async fn shutdown(mut self) -> Vec<(String, CloseReport)> {
        for (_, running) in std::mem::take(&mut self.running) {
            running.stop_accepting().await;
        }
        tracing::info!("listeners closed; draining live connections");
        self.registry.shutdown().await
    }
}
