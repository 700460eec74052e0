//! Blocks from a kubo daemon over its HTTP RPC API (`POST /api/v0/block/get?arg=<CID>`), for
//! `--ipfs-address` as nerdctl takes it (nerdctl-ipfs.md 3): a multiaddr of the API.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ferry_ipfs::{BlockSource, Error};
use futures::future::BoxFuture;

/// A kubo daemon's RPC API as a source of blocks. Every block is checked against its CID.
pub struct KuboSource {
    client: reqwest::Client,
    /// `http://host:port`.
    api: String,
}

impl KuboSource {
    /// A source for the API at `multiaddr` (`/ip4/127.0.0.1/tcp/5001`, `/ip6/::1/tcp/5001`,
    /// `/dns/host/tcp/5001`, with an optional trailing `/http`).
    pub fn new(multiaddr: &str) -> Result<KuboSource, String> {
        let parts: Vec<&str> = multiaddr.trim_end_matches('/').split('/').collect();
        let host = match parts.as_slice() {
            ["", "ip4" | "dns" | "dns4" | "dns6", host, "tcp", _, ..] => host.to_string(),
            ["", "ip6", host, "tcp", _, ..] => format!("[{host}]"),
            _ => {
                return Err(format!(
                    "unsupported kubo API address {multiaddr:?}: use /ip4/HOST/tcp/PORT"
                ))
            }
        };
        let port: u16 = parts[4]
            .parse()
            .map_err(|_| format!("invalid port in kubo API address {multiaddr:?}"))?;
        if parts.len() > 5 && parts[5..] != ["http"] {
            return Err(format!(
                "unsupported kubo API address {multiaddr:?}: only plain http"
            ));
        }
        Ok(KuboSource {
            client: reqwest::Client::new(),
            api: format!("http://{host}:{port}"),
        })
    }

    async fn fetch(&self, cid: Cid, timeout: Duration) -> Result<Bytes, Error> {
        let failed =
            |why: String| Error::Node(format!("kubo {}: block/get {cid}: {why}", self.api));
        let url = format!("{}/api/v0/block/get?arg={cid}", self.api);
        let response = self
            .client
            .post(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            return Err(failed(format!("{status}: {}", text.trim())));
        }
        let data = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        ferry_unixfs::verify_block(&cid, &data).map_err(|e| failed(e.to_string()))?;
        Ok(data)
    }
}

impl BlockSource for KuboSource {
    fn get_block(&self, cid: Cid, timeout: Duration) -> BoxFuture<'_, Result<Bytes, Error>> {
        Box::pin(self.fetch(cid, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::KuboSource;

    #[test]
    fn api_addresses_are_multiaddrs() {
        let api = |a: &str| KuboSource::new(a).map(|k| k.api);
        assert_eq!(
            api("/ip4/127.0.0.1/tcp/5001").unwrap(),
            "http://127.0.0.1:5001"
        );
        assert_eq!(api("/ip6/::1/tcp/5001/http").unwrap(), "http://[::1]:5001");
        assert_eq!(api("/dns/kubo/tcp/5001").unwrap(), "http://kubo:5001");
        assert_eq!(
            api("127.0.0.1:5001").unwrap_err(),
            "unsupported kubo API address \"127.0.0.1:5001\": use /ip4/HOST/tcp/PORT"
        );
        assert!(api("/ip4/127.0.0.1/tcp/5001/tls").is_err());
    }
}
