//! Prometheus metrics: REST request counts and latency histograms by route, method and
//! status ([`HttpMetrics`]), the API's connection counters ([`ConnectionMetrics`]), and the
//! per-network DHCP and metadata counters ([`render_networks`]).
//!
//! Every label set is bounded by the code, never by what clients send: routes are the route
//! templates (or `unmatched`), methods the standard ones (or `other`), statuses three digits.
//!
//! Rendered in the Prometheus text exposition format for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::dhcp::DhcpStats;
use crate::metadata::{MetadataStats, STATUS_CODES};
use crate::ops::networks::runtime::NetworkCounters;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Request metrics of the REST API.
#[derive(Default)]
pub struct HttpMetrics {
    series: Mutex<BTreeMap<(String, &'static str, u16), Series>>,
    /// Connection counters of the API listener.
    pub connections: ConnectionMetrics,
}

/// The method label: a standard method's name, or `other` (a client can send any token as a
/// method, and each would otherwise become a series kept forever).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

impl HttpMetrics {
    /// Records one finished request. `route` is the matched route template (never the raw
    /// path, so ids do not explode the label set); methods outside the standard ones are
    /// counted as `other`.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = series
            .entry((route.to_string(), method_label(method), status))
            .or_default();
        s.count += 1;
        s.sum_seconds += secs;
        for (bucket, bound) in s.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP hyperlet_http_requests_total HTTP requests answered, by route, method and status.\n");
        out.push_str("# TYPE hyperlet_http_requests_total counter\n");
        for ((route, method, status), s) in series.iter() {
            let _ = writeln!(
                out,
                "hyperlet_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                escape(method),
                s.count
            );
        }
        out.push_str(
            "# HELP hyperlet_http_request_duration_seconds Time to answer HTTP requests.\n",
        );
        out.push_str("# TYPE hyperlet_http_request_duration_seconds histogram\n");
        for ((route, method, status), s) in series.iter() {
            let labels = format!(
                "route=\"{}\",method=\"{}\",status=\"{status}\"",
                escape(route),
                escape(method)
            );
            for (bound, count) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "hyperlet_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "hyperlet_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "hyperlet_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "hyperlet_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out.push_str(&self.connections.render());
        out
    }
}

/// Why the listener closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// The TLS handshake did not finish within the header read timeout.
    HandshakeTimeout,
    /// A request's headers did not arrive within the header read timeout.
    HeaderTimeout,
    /// No request was in flight for the idle timeout.
    IdleTimeout,
}

impl ConnectionClose {
    const ALL: [Self; 3] = [
        Self::HandshakeTimeout,
        Self::HeaderTimeout,
        Self::IdleTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// Counters of the API listener's connections.
#[derive(Default)]
pub struct ConnectionMetrics {
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    closed: [AtomicU64; ConnectionClose::ALL.len()],
}

impl ConnectionMetrics {
    /// Counts a connection taken into service; [`Self::finished`] must follow.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the end of a connection counted by [`Self::accepted`].
    pub fn finished(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a connection closed on accept because `api.max_connections` were open.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection the listener closed for `reason`.
    pub fn closed(&self, reason: ConnectionClose) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        one(
            "hyperlet_http_connections_accepted_total",
            "counter",
            "API connections taken into service.",
            &self.accepted,
        );
        one(
            "hyperlet_http_connections_refused_total",
            "counter",
            "API connections closed on accept because api.max_connections were open.",
            &self.refused,
        );
        one(
            "hyperlet_http_connections_open",
            "gauge",
            "API connections open now.",
            &self.open,
        );
        out.push_str("# HELP hyperlet_http_connections_closed_total API connections the agent closed, by reason.\n");
        out.push_str("# TYPE hyperlet_http_connections_closed_total counter\n");
        for reason in ConnectionClose::ALL {
            let _ = writeln!(
                out,
                "hyperlet_http_connections_closed_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.closed[reason as usize].load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The counters of every network's DHCP and metadata servers in Prometheus text format:
/// `hyperlet_dhcp_received_total` and `hyperlet_dhcp_sent_total` by message type,
/// `hyperlet_dhcp_ignored_total`, `hyperlet_metadata_answers_total` by status code and
/// `hyperlet_metadata_unknown_callers_total`, each labelled with the network id.
pub fn render_networks(networks: &[NetworkCounters]) -> String {
    let mut out = String::new();
    let dhcp: Vec<(&str, DhcpStats)> = networks
        .iter()
        .filter_map(|n| n.dhcp.map(|d| (n.network_id.as_str(), d)))
        .collect();
    let metadata: Vec<(&str, MetadataStats)> = networks
        .iter()
        .filter_map(|n| n.metadata.map(|m| (n.network_id.as_str(), m)))
        .collect();
    let mut family = |name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let net = |id: &str| format!("network=\"{}\"", escape(id));
    family(
        "hyperlet_dhcp_received_total",
        "DHCP requests received, by network and message type.",
        dhcp.iter()
            .flat_map(|(id, d)| {
                [
                    ("discover", d.discovers),
                    ("request", d.requests),
                    ("release", d.releases),
                    ("decline", d.declines),
                    ("inform", d.informs),
                ]
                .map(|(kind, n)| (format!("{},type=\"{kind}\"", net(id)), n))
            })
            .collect(),
    );
    family(
        "hyperlet_dhcp_sent_total",
        "DHCP replies sent, by network and message type.",
        dhcp.iter()
            .flat_map(|(id, d)| {
                [("offer", d.offers), ("ack", d.acks), ("nak", d.naks)]
                    .map(|(kind, n)| (format!("{},type=\"{kind}\"", net(id)), n))
            })
            .collect(),
    );
    family(
        "hyperlet_dhcp_ignored_total",
        "DHCP datagrams ignored (unknown MAC, another server's request, malformed), by network.",
        dhcp.iter().map(|(id, d)| (net(id), d.ignored)).collect(),
    );
    family(
        "hyperlet_metadata_answers_total",
        "Metadata service answers, by network and status code.",
        metadata
            .iter()
            .flat_map(|(id, m)| {
                let codes = STATUS_CODES
                    .iter()
                    .zip(m.answers)
                    .map(|(code, n)| (format!("{},code=\"{code}\"", net(id)), n));
                codes.chain([(format!("{},code=\"other\"", net(id)), m.other_answers)])
            })
            .collect(),
    );
    family(
        "hyperlet_metadata_unknown_callers_total",
        "Metadata requests refused because the caller is no port of the network, by network.",
        metadata
            .iter()
            .map(|(id, m)| (net(id), m.unknown_callers))
            .collect(),
    );
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `hyperlet_port_dropped_packets_total{port, reason}`: packets the firewall dropped per
/// port, `reason` `spoof` (anti-spoofing) or `policy` (no security group rule allowed them).
pub fn render_port_drops(drops: &[crate::ops::security_groups::apply::PortDrops]) -> String {
    let mut out = String::from(
        "# HELP hyperlet_port_dropped_packets_total Packets the firewall dropped, by port and reason (spoof, policy).\n\
         # TYPE hyperlet_port_dropped_packets_total counter\n",
    );
    for d in drops {
        let _ = writeln!(
            out,
            "hyperlet_port_dropped_packets_total{{port=\"{}\",reason=\"{}\"}} {}",
            escape(&d.port_id),
            d.reason,
            d.packets
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_are_rendered() {
        let m = HttpMetrics::default();
        m.observe("GET", "/v1/host", 200, Duration::from_millis(3));
        m.observe("GET", "/v1/host", 200, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "hyperlet_http_requests_total{route=\"/v1/host\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.05\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
    }

    #[test]
    fn client_chosen_methods_share_one_series() {
        let m = HttpMetrics::default();
        for i in 0..100 {
            m.observe(
                &format!("FUZZ{i}"),
                "unmatched",
                405,
                Duration::from_millis(1),
            );
        }
        let text = m.render();
        assert!(text.contains(
            "hyperlet_http_requests_total{route=\"unmatched\",method=\"other\",status=\"405\"} 100"
        ), "{text}");
        assert!(!text.contains("FUZZ"), "{text}");
    }

    #[test]
    fn connection_counters_are_rendered() {
        let m = HttpMetrics::default();
        m.connections.accepted();
        m.connections.accepted();
        m.connections.finished();
        m.connections.refused();
        m.connections.closed(ConnectionClose::HeaderTimeout);
        let text = m.render();
        for line in [
            "hyperlet_http_connections_accepted_total 2",
            "hyperlet_http_connections_open 1",
            "hyperlet_http_connections_refused_total 1",
            "hyperlet_http_connections_closed_total{reason=\"header_timeout\"} 1",
            "hyperlet_http_connections_closed_total{reason=\"idle_timeout\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn network_counters_are_rendered_per_network() {
        let mut metadata = MetadataStats::default();
        metadata.answers[0] = 7; // 200
        metadata.unknown_callers = 2;
        let networks = [
            NetworkCounters {
                network_id: "net-a".into(),
                dhcp: Some(DhcpStats {
                    discovers: 3,
                    acks: 2,
                    ignored: 1,
                    ..DhcpStats::default()
                }),
                metadata: Some(metadata),
            },
            NetworkCounters {
                network_id: "net-b".into(),
                dhcp: None,
                metadata: None,
            },
        ];
        let text = render_networks(&networks);
        for line in [
            "hyperlet_dhcp_received_total{network=\"net-a\",type=\"discover\"} 3",
            "hyperlet_dhcp_sent_total{network=\"net-a\",type=\"ack\"} 2",
            "hyperlet_dhcp_ignored_total{network=\"net-a\"} 1",
            "hyperlet_metadata_answers_total{network=\"net-a\",code=\"200\"} 7",
            "hyperlet_metadata_answers_total{network=\"net-a\",code=\"other\"} 0",
            "hyperlet_metadata_unknown_callers_total{network=\"net-a\"} 2",
            "# TYPE hyperlet_metadata_answers_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(!text.contains("net-b"), "{text}");
    }
}
