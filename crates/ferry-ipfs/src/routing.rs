//! Finding peers and content: the Amino DHT (provide, find providers), mDNS and bootstrap
//! peers, and the hook through which [`crate::fetch_blob`] asks the DHT for providers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ferry_bitswap::Bitswap;
use libp2p::kad::{self, store::RecordStore, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{identify, mdns, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::node::Command;
use crate::swarm::{Behaviour, KAD_PROTOCOL};
use crate::Error;

/// How long a fetch waits for its root block from connected peers before asking the DHT
/// (boxo's `ProvSearchDelay`, formats 2.4).
pub(crate) const PROV_SEARCH_DELAY: Duration = Duration::from_secs(1);

/// How often a fetch still missing its root asks the DHT again.
const PROV_SEARCH_INTERVAL: Duration = Duration::from_secs(10);

/// Providers dialed per lookup (boxo: up to 10 providers per lookup, formats 2.4).
pub(crate) const MAX_PROVIDERS: usize = 10;

/// Kademlia's k: while the routing table holds fewer peers than this, every new peer may be
/// one of the closest to our keys, so they are announced again.
const K_VALUE: usize = 20;

/// A new routing table peer triggers a re-announcement after this pause, so a burst of
/// peers costs one round.
const REANNOUNCE_DELAY: Duration = Duration::from_secs(1);

/// Provide lookups running at once; more keys wait their turn.
const MAX_PROVIDES_IN_FLIGHT: usize = 16;

/// Below this many connected peers the bootstrap peers are dialed again (kubo's
/// `MinPeerThreshold`).
pub(crate) const BOOTSTRAP_LOW_WATER: usize = 4;

/// A handle for the fetch code to ask the node for providers.
#[derive(Clone)]
pub(crate) struct Router {
    pub(crate) commands: mpsc::Sender<Command>,
}

tokio::task_local! {
    static ROUTER: Router;
}

/// Runs `fut` with `router` available to every fetch in it.
pub(crate) async fn scoped<F: Future>(router: Router, fut: F) -> F::Output {
    ROUTER.scope(router, fut).await
}

impl Router {
    /// Looks up providers of `cid` and dials up to [`MAX_PROVIDERS`] of them; returns how
    /// many were dialed once the lookup ends.
    async fn find_providers(&self, cid: Cid) -> Result<usize, Error> {
        let stopped = || Error::Node("the node has stopped".into());
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::FindProviders(cid, tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }
}

/// [`Bitswap::get`], and, when the block has not come after [`PROV_SEARCH_DELAY`] and the
/// fetch runs within [`crate::Node::routed`], a DHT lookup for its providers every
/// [`PROV_SEARCH_INTERVAL`] until it comes. Bitswap sends the want to every peer that
/// connects, so dialing the providers is enough.
pub(crate) async fn get_searching(
    bitswap: &Bitswap,
    cid: Cid,
    timeout: Duration,
) -> Result<Bytes, ferry_bitswap::Error> {
    let Ok(router) = ROUTER.try_with(Router::clone) else {
        return bitswap.get(cid, timeout).await;
    };
    let get = bitswap.get(cid, timeout);
    tokio::pin!(get);
    let mut next_search = Instant::now() + PROV_SEARCH_DELAY;
    loop {
        tokio::select! {
            result = &mut get => return result,
            () = tokio::time::sleep_until(next_search) => {}
        }
        tokio::select! {
            result = &mut get => return result,
            found = router.find_providers(cid) => match found {
                Ok(n) => tracing::debug!(%cid, dialed = n, "provider search done"),
                Err(e) => tracing::debug!(%cid, error = %e, "provider search failed"),
            },
        }
        next_search = Instant::now() + PROV_SEARCH_INTERVAL;
    }
}

/// The DHT key of a CID: its multihash, so CIDv0/v1 and raw/dag-pb of the same bytes share
/// providers (formats 2.7).
pub(crate) fn dht_key(cid: &Cid) -> RecordKey {
    RecordKey::new(&cid.hash().to_bytes())
}

/// One provider lookup a fetch waits for.
struct Lookup {
    reply: Option<oneshot::Sender<usize>>,
    dialed: HashSet<PeerId>,
}

/// The node's DHT bookkeeping.
#[derive(Default)]
pub(crate) struct Dht {
    /// Keys this node announces (again whenever the small routing table grows).
    provided: HashSet<RecordKey>,
    /// Keys waiting for a provide lookup, and those queued (to queue each once).
    to_announce: VecDeque<RecordKey>,
    queued: HashSet<RecordKey>,
    /// Provide lookups running.
    announcing: HashSet<QueryId>,
    lookups: HashMap<QueryId, Lookup>,
    reannounce_at: Option<Instant>,
}

impl Dht {
    /// Announces `cids` as provided by this node, now (at most [`MAX_PROVIDES_IN_FLIGHT`]
    /// lookups at a time) and every 22 h (kad republishes the local provider records itself).
    pub(crate) fn provide(&mut self, swarm: &mut Swarm<Behaviour>, cids: &[Cid]) {
        for cid in cids {
            let key = dht_key(cid);
            self.provided.insert(key.clone());
            if self.queued.insert(key.clone()) {
                self.to_announce.push_back(key);
            }
        }
        self.pump(swarm);
    }

    /// Starts provide lookups for queued keys while fewer than the limit run.
    fn pump(&mut self, swarm: &mut Swarm<Behaviour>) {
        while self.announcing.len() < MAX_PROVIDES_IN_FLIGHT {
            let Some(key) = self.to_announce.pop_front() else {
                return;
            };
            self.queued.remove(&key);
            match swarm.behaviour_mut().kad.start_providing(key) {
                Ok(id) => {
                    self.announcing.insert(id);
                }
                Err(e) => tracing::warn!(error = %e, "cannot provide"),
            }
        }
    }

    /// Starts a provider lookup for `cid`; `reply` gets the number of providers dialed.
    pub(crate) fn find_providers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        cid: Cid,
        reply: oneshot::Sender<usize>,
    ) {
        let id = swarm.behaviour_mut().kad.get_providers(dht_key(&cid));
        let lookup = Lookup {
            reply: Some(reply),
            dialed: HashSet::new(),
        };
        self.lookups.insert(id, lookup);
    }

    /// Re-announces every provided key when a new routing table peer asked for it.
    pub(crate) fn tick(&mut self, swarm: &mut Swarm<Behaviour>) {
        if self.reannounce_at.is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.reannounce_at = None;
        tracing::debug!(keys = self.provided.len(), "announcing provided keys again");
        for key in &self.provided {
            if self.queued.insert(key.clone()) {
                self.to_announce.push_back(key.clone());
            }
        }
        self.pump(swarm);
    }

    pub(crate) fn on_kad(&mut self, swarm: &mut Swarm<Behaviour>, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => {
                tracing::debug!(%peer, "dht routing table gained a peer");
                if !self.provided.is_empty() && routing_table_size(swarm) <= K_VALUE {
                    self.reannounce_at
                        .get_or_insert(Instant::now() + REANNOUNCE_DELAY);
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                    key,
                    providers,
                })) = &result
                {
                    self.dial_providers(swarm, id, key, providers);
                }
                if let QueryResult::StartProviding(outcome) = &result {
                    tracing::debug!(?outcome, "provide done");
                    self.announcing.remove(&id);
                    self.pump(swarm);
                }
                if step.last {
                    if let Some(mut lookup) = self.lookups.remove(&id) {
                        if let Some(reply) = lookup.reply.take() {
                            let _ = reply.send(lookup.dialed.len());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Dials the providers found, with the addresses their records carried (a local record's
    /// come from the store; a remote one's kad hands the dial while the query runs).
    fn dial_providers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        id: QueryId,
        key: &RecordKey,
        providers: &HashSet<PeerId>,
    ) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let local = *swarm.local_peer_id();
        let records = swarm.behaviour_mut().kad.store_mut().providers(key);
        for &peer in providers {
            if peer == local || lookup.dialed.len() >= MAX_PROVIDERS {
                continue;
            }
            if !lookup.dialed.insert(peer) || swarm.is_connected(&peer) {
                continue;
            }
            let addrs: Vec<Multiaddr> = records
                .iter()
                .filter(|r| r.provider == peer)
                .flat_map(|r| r.addresses.clone())
                .collect();
            tracing::debug!(%peer, ?addrs, "dialing a provider");
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "provider dial refused");
            }
        }
        if lookup.dialed.len() >= MAX_PROVIDERS {
            if let Some(mut query) = swarm.behaviour_mut().kad.query_mut(&id) {
                query.finish();
            }
        }
    }
}

fn routing_table_size(swarm: &mut Swarm<Behaviour>) -> usize {
    swarm
        .behaviour_mut()
        .kad
        .kbuckets()
        .map(|b| b.num_entries())
        .sum()
}

/// A peer that says it serves the DHT joins the routing table with its listen addresses:
/// kad learns no address from an inbound connection.
pub(crate) fn on_identify(swarm: &mut Swarm<Behaviour>, event: identify::Event) {
    let identify::Event::Received { peer_id, info, .. } = event else {
        return;
    };
    if !info.protocols.contains(&KAD_PROTOCOL) {
        return;
    }
    for addr in info.listen_addrs {
        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
    }
}

/// Dials the peers mDNS found on the local network.
pub(crate) fn on_mdns(swarm: &mut Swarm<Behaviour>, event: mdns::Event) {
    let mdns::Event::Discovered(found) = event else {
        return;
    };
    let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    for (peer, addr) in found {
        by_peer.entry(peer).or_default().push(addr);
    }
    for (peer, addrs) in by_peer {
        if swarm.is_connected(&peer) {
            continue;
        }
        tracing::debug!(%peer, ?addrs, "found on the local network");
        if let Err(e) = swarm.dial(DialOpts::peer_id(peer).addresses(addrs).build()) {
            tracing::debug!(%peer, error = %e, "mdns dial refused");
        }
    }
}

/// Dials the peers that mDNS found and whose records have not expired, if not connected (the
/// mDNS behaviour gives the swarm their addresses).
pub(crate) fn redial_lan_peers(swarm: &mut Swarm<Behaviour>) {
    let Some(mdns) = swarm.behaviour().mdns.as_ref() else {
        return;
    };
    let found: Vec<PeerId> = mdns.discovered_nodes().copied().collect();
    for peer in found {
        if swarm.is_connected(&peer) {
            continue;
        }
        if let Err(e) = swarm.dial(DialOpts::peer_id(peer).build()) {
            tracing::debug!(%peer, error = %e, "mdns redial refused");
        }
    }
}

/// Dials the bootstrap peers, and puts those with a plain address in the routing table.
pub(crate) fn dial_bootstrap(swarm: &mut Swarm<Behaviour>, bootstrap: &[Multiaddr]) {
    for addr in bootstrap {
        let peer = addr.iter().find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        });
        let resolved = !addr
            .iter()
            .any(|p| matches!(p, Protocol::Dnsaddr(_) | Protocol::Dns(_)));
        if let (Some(peer), true) = (peer, resolved) {
            let plain: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect();
            swarm.behaviour_mut().kad.add_address(&peer, plain);
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "bootstrap dial refused");
        }
    }
    if !bootstrap.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dht_key_is_the_multihash_shared_by_cid_versions() {
        // "hello world\n" as a CIDv1 raw block (formats 2.6) and the same multihash as CIDv0
        let v1: Cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
            .parse()
            .unwrap();
        let v0 = Cid::new_v0(*v1.hash()).unwrap();
        let expected = "1220a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
        let hex: String = dht_key(&v1)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        assert_eq!(dht_key(&v0), dht_key(&v1));
    }
}
