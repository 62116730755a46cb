//! `cairn invoke ENDPOINT [PATH] [--data FILE|-]`: one request to an applied endpoint, as
//! `az ml online-endpoint invoke` sends one: the body from a file or standard input,
//! `POST`ed to its prediction route with the endpoint's key when it has one, the answer
//! on stdout. On the local target the address and the key come from the machine (the
//! router's port, the key file apply generated); elsewhere `--url` and `--key-file` say
//! them. The key is never printed.

use std::io::Read as _;
use std::path::PathBuf;

use cairn::address::Kind;
use cairn::plan::endpoint::EndpointValue;
use cairn::serving::EndpointId;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::context;
use super::{CommandError, Outcome, Output, ReportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The endpoint: its name, `endpoint.<name>` or `<workspace>/endpoint.<name>`.
    #[arg(value_name = "ENDPOINT")]
    endpoint: String,

    /// The request body: a JSON file, or `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    data: PathBuf,

    /// The route to POST to (`/v2/models/<name>/infer` for the Open Inference Protocol).
    #[arg(long, value_name = "PATH", default_value = "/v1/predict")]
    route: String,

    /// The endpoint's base URL, where this machine does not know it (Kubernetes: the
    /// gateway's address).
    #[arg(long, value_name = "URL")]
    url: Option<String>,

    /// A file holding the endpoint's key (Kubernetes: the Secret `<endpoint>-key`'s
    /// `data.key`, decoded).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let loaded = context::load(&args.report.source, output)?;
    let selection = context::select(&loaded, &args.report.workspaces)?;
    let wanted = args.endpoint.as_str();
    let name = wanted.rsplit_once("endpoint.").map_or(wanted, |(_, n)| n);
    let workspace = wanted.split_once('/').map(|(ws, _)| ws);
    let found: Vec<_> = loaded
        .desired
        .resources
        .iter()
        .filter(|r| r.kind() == Kind::Endpoint && r.address.name == name)
        .filter(|r| workspace.is_none_or(|ws| r.address.workspace == ws))
        .filter(|r| selection.stores.contains_key(&r.address.workspace))
        .collect();
    let resource = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(
                CommandError::user(format!("no endpoint `{wanted}` is declared"))
                    .hint_opt(Some("`cairn status` lists the endpoints".into())),
            )
        }
        many => {
            let names: Vec<String> = many.iter().map(|r| r.address.to_string()).collect();
            return Err(CommandError::user(format!(
                "`{wanted}` names several endpoints: {}",
                names.join(", ")
            ))
            .hint_opt(Some(
                "name it with its workspace: `<workspace>/endpoint.<name>`".into(),
            )));
        }
    };
    let address = resource.address.to_string();
    let rt = super::runtime()?;
    let store = &selection.stores[&resource.address.workspace];
    let state = rt
        .block_on(store.state())
        .map_err(|e| CommandError::store(&e))?;
    let value: EndpointValue = state
        .state
        .resources
        .get(&address)
        .and_then(|e| serde_json::from_value(e.value.clone()).ok())
        .ok_or_else(|| {
            CommandError::user(format!("{address} is not applied yet"))
                .hint_opt(Some("`cairn apply` creates it".into()))
        })?;
    let local = value.target == "local";
    let base =
        match (&args.url, local, value.port) {
            (Some(url), _, _) => url.trim_end_matches('/').to_string(),
            (None, true, Some(port)) => format!("http://127.0.0.1:{port}"),
            _ => return Err(CommandError::user(format!(
                "where {address} answers is not known on this machine (target `{}`)",
                value.target
            ))
            .hint_opt(Some(
                "pass `--url` with the gateway's address, and `--key-file` with the endpoint's key"
                    .into(),
            ))),
        };
    let key = if value.auth == "none" {
        None
    } else {
        let path = match (&args.key_file, local) {
            (Some(path), _) => path.clone(),
            (None, true) => context::local_serving(&loaded, Default::default()).key_path(
                &EndpointId {
                    workspace: resource.address.workspace.clone(),
                    name: resource.address.name.clone(),
                },
            ),
            (None, false) => {
                return Err(CommandError::user(format!(
                    "{address} needs its key (auth = \"{}\")",
                    value.auth
                ))
                .hint_opt(Some(format!(
                    "pass `--key-file` with the Secret's key: `kubectl get secret {}-key -o jsonpath='{{.data.key}}' | base64 -d`",
                    resource.address.name
                ))))
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CommandError::user(format!("cannot read the key file {}: {e}", path.display()))
        })?;
        Some(text.trim().to_string())
    };
    let body = if args.data.as_os_str() == "-" {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|e| CommandError::user(format!("cannot read standard input: {e}")))?;
        text
    } else {
        std::fs::read(&args.data)
            .map_err(|e| CommandError::user(format!("cannot read {}: {e}", args.data.display())))?
    };
    let url = format!("{base}{}", args.route);
    let mut request = hyper::Request::post(&url).header("content-type", "application/json");
    if let Some(key) = &key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| {
            CommandError::user(format!("`{url}` is not a URL a request can go to: {e}"))
        })?;
    let (status, answer) = rt.block_on(async {
        let client: Client<_, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await.map_err(|e| {
            CommandError::target(format!(
                "{address} did not answer at {url}: {}",
                cairn::diagnostics::error_chain(&e)
            ))
        })?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CommandError::target(format!("reading the answer failed: {e}")))?
            .to_bytes();
        Ok::<_, CommandError>((status, answer))
    })?;
    println!("{}", String::from_utf8_lossy(&answer).trim_end());
    if status.is_success() {
        Ok(Outcome::Success)
    } else {
        Err(CommandError::target(format!("{address} answered {status}")))
    }
}
