//! `talosctl events`: the nodes' event stream.

use clap::Args;
use machinery::{Error, Result};
use prost::Message;

use crate::client;
use crate::config_cmd::ConnArgs;

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Replay this many past events first.
    #[arg(long, default_value_t = 0)]
    tail: i32,
    /// Replay the events after this id.
    #[arg(long, default_value = "")]
    since: String,
    /// Replay the events of this long ago (e.g. 10m).
    #[arg(long, default_value = "")]
    duration: String,
}

fn describe(data: &prost_types::Any) -> (String, String, String) {
    let kind = data
        .type_url
        .rsplit('/')
        .next()
        .unwrap_or(&data.type_url)
        .to_string();
    if kind == "machine.ServiceStateEvent" {
        if let Ok(e) = api::machine::ServiceStateEvent::decode(data.value.as_slice()) {
            let action = api::machine::service_state_event::Action::try_from(e.action)
                .map(|a| a.as_str_name().to_string())
                .unwrap_or_default();
            let action = action[..1].to_string() + &action[1..].to_lowercase();
            return (kind, e.service, format!("{}: {action}", e.message));
        }
    }
    (kind, String::new(), String::new())
}

pub async fn run(a: EventsArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let t = targets.first().ok_or_else(|| Error::msg("no node"))?;
    let seconds = if a.duration.is_empty() {
        0
    } else {
        crate::util::parse_duration(&a.duration)?.as_secs() as i32
    };
    let mut stream = client::machine(t)
        .events(api::machine::EventsRequest {
            tail_events: a.tail,
            tail_id: a.since.clone(),
            tail_seconds: seconds,
            with_actor_id: String::new(),
        })
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    println!("NODE\tID\tEVENT\tSOURCE\tMESSAGE");
    while let Some(e) = stream
        .message()
        .await
        .map_err(|s| client::call_error(&t.node, s))?
    {
        let (kind, source, message) = e.data.as_ref().map(describe).unwrap_or_default();
        println!("{}\t{}\t{kind}\t{source}\t{message}", t.node, e.id);
    }
    Ok(())
}
