//! Maintenance filter: hosts that a maintenance service lists take no new servers. Once per
//! call the filter asks the service (`GET <url>`, through the `http` grant) which hosts are
//! under maintenance; it answers a JSON array of host names, or an object whose `hosts` member
//! is one (`{"hosts": ["node-7", "node-9"]}`). Listed hosts fail, named in the reason.
//!
//! When the service cannot be asked (refused, slow, an error status, not that JSON) the call
//! fails with code `unavailable` — no host is placed on a guess — unless `fail_open = true`,
//! which passes every host and logs why.
//!
//! Settings: `url` (required, `http(s)://host[:port]/path`), `fail_open` (default `false`).
//! Grants: `["log", "http"]` (the component imports both), with `[plugins.http] origins`
//! holding the URL's origin.

use hyperlet_plugin_sdk::http;
use hyperlet_plugin_sdk::prelude::*;

/// Most host names the service may list.
const MAX_LISTED: usize = 100_000;

/// The filter.
pub struct MaintenanceFilter {
    url: String,
    fail_open: bool,
}

/// The host names in the service's answer.
fn listed(body: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = match &value {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(map) => match map.get("hosts") {
            Some(serde_json::Value::Array(list)) => list,
            _ => return Err("an object without a hosts array".into()),
        },
        _ => return Err("neither an array nor an object".into()),
    };
    if list.len() > MAX_LISTED {
        return Err(format!("{} names; at most {MAX_LISTED}", list.len()));
    }
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{v} is not a host name"))
        })
        .collect()
}

impl MaintenanceFilter {
    /// The hosts under maintenance now, or why the service could not say.
    fn ask(&self) -> Result<Vec<String>, String> {
        let answer = http::get(&self.url).map_err(|e| format!("{}: {e}", self.url))?;
        if answer.status != 200 {
            return Err(format!("{} answered {}", self.url, answer.status));
        }
        listed(&answer.body).map_err(|e| format!("{}: {e}", self.url))
    }
}

impl Filter for MaintenanceFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&["url", "fail_open"])?;
        let url = settings.require("url")?.to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(PluginError::bad_setting(format!(
                "url {url:?} must start with http:// or https://"
            )));
        }
        Ok(Self {
            url,
            fail_open: settings.get_bool("fail_open", false)?,
        })
    }

    fn filter_all(&self, _spec: &RequestSpec, hosts: &Hosts<'_>) -> Result<Verdicts, PluginError> {
        let mut verdicts = Verdicts::with_capacity(hosts.len());
        let down = match self.ask() {
            Ok(down) => down,
            Err(why) if self.fail_open => {
                log::warn!("maintenance service unusable, passing every host: {why}");
                hosts.iter().for_each(|_| verdicts.push_pass());
                return Ok(verdicts);
            }
            Err(why) => return Err(PluginError::new("unavailable", why)),
        };
        let down: std::collections::HashSet<&str> = down.iter().map(String::as_str).collect();
        for host in hosts.iter() {
            verdicts.push(Verdict::pass_if(!down.contains(host.name()), || {
                format!("{} is under maintenance (per {})", host.name(), self.url)
            }));
        }
        Ok(verdicts)
    }

    fn filter(&self, _spec: &RequestSpec, _host: &Host<'_>) -> Verdict {
        // `filter_all` asks the service once per call.
        Verdict::Pass
    }
}

hyperlet_plugin_sdk::export_filter!(MaintenanceFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::http::{HttpError, Response};
    use hyperlet_plugin_sdk::testing::{http as mock, run_filter, HostBuilder, RequestBuilder};

    const URL: &str = "http://127.0.0.1:9/maintenance";

    fn run(settings: &[(&str, &str)]) -> Result<Vec<Verdict>, PluginError> {
        let hosts = [
            HostBuilder::new().name("node-1"),
            HostBuilder::new().name("node-2"),
        ];
        run_filter::<MaintenanceFilter>(settings, &RequestBuilder::new().build(), &hosts)
    }

    fn serve(status: u16, body: &'static str) {
        mock::respond(move |_| {
            Ok(Response {
                status,
                body: body.as_bytes().to_vec(),
                ..Response::default()
            })
        });
    }

    #[test]
    fn listed_hosts_fail() {
        serve(200, r#"{"hosts": ["node-2"]}"#);
        let v = run(&[("url", URL)]).unwrap();
        assert!(v[0].is_pass());
        assert_eq!(
            v[1],
            Verdict::fail(format!("node-2 is under maintenance (per {URL})"))
        );
        assert_eq!(mock::take_requests().len(), 1, "one request per call");
        serve(200, r#"["node-1"]"#);
        assert!(!run(&[("url", URL)]).unwrap()[0].is_pass());
        mock::clear();
    }

    #[test]
    fn an_unusable_service_fails_the_call_unless_fail_open() {
        for body in ["nope", r#"{"hosts": [1]}"#, "42"] {
            serve(200, body);
            assert_eq!(
                run(&[("url", URL)]).unwrap_err().code,
                "unavailable",
                "{body}"
            );
        }
        serve(503, "[]");
        assert!(run(&[("url", URL)])
            .unwrap_err()
            .message
            .contains("answered 503"));
        mock::respond(|_| Err(HttpError::Timeout));
        assert!(run(&[("url", URL)])
            .unwrap_err()
            .message
            .contains("timed out"));
        let v = run(&[("url", URL), ("fail_open", "true")]).unwrap();
        assert!(v.iter().all(Verdict::is_pass));
        mock::clear();
    }

    #[test]
    fn settings_are_checked() {
        assert!(run(&[]).is_err());
        assert!(run(&[("url", "ftp://x")]).is_err());
        assert!(run(&[("url", URL), ("fail_open", "maybe")]).is_err());
    }
}
