//! The `redis` crate, for ordinary client use in tests: connecting, and its replies as [`Resp`].

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};

use crate::reply::Resp;

/// A multiplexed connection whose calls may take up to `response_timeout` (longer than any
/// blocking call the test makes, or the client gives up first).
pub async fn connect(url: &str, response_timeout: Duration) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout));
    redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await
}

/// Sends `args` (the command name first) and returns the reply as the crate parsed it.
pub async fn query<A: AsRef<[u8]>>(con: &mut impl ConnectionLike, args: &[A]) -> RedisResult<Value> {
    let name = std::str::from_utf8(args[0].as_ref()).expect("command names are text");
    let mut cmd = redis::cmd(name);
    for arg in &args[1..] {
        cmd.arg(arg.as_ref());
    }
    cmd.query_async(con).await
}

/// An error as the server wrote it: code and detail.
pub fn err_text(error: &RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => error.to_string(),
    }
}

/// A reply or an error, as [`Resp`], so one parser of LOCK.* replies serves both clients.
pub fn result_to_resp(reply: RedisResult<Value>) -> Resp {
    match reply {
        Ok(value) => value_to_resp(&value),
        Err(error) => Resp::Error(err_text(&error)),
    }
}

pub fn value_to_resp(value: &Value) -> Resp {
    match value {
        Value::Nil => Resp::Null,
        Value::Int(value) => Resp::Int(*value),
        Value::BulkString(data) => Resp::Bulk(data.clone()),
        Value::Array(items) => Resp::Array(items.iter().map(value_to_resp).collect()),
        Value::Set(items) => Resp::Set(items.iter().map(value_to_resp).collect()),
        Value::SimpleString(text) => Resp::Simple(text.clone()),
        Value::Okay => Resp::Simple("OK".into()),
        Value::Map(pairs) => Resp::Map(pairs.iter().map(|(k, v)| (value_to_resp(k), value_to_resp(v))).collect()),
        Value::Boolean(value) => Resp::Bool(*value),
        Value::Double(value) => Resp::Double(value.to_string()),
        Value::VerbatimString { text, .. } => Resp::Verbatim(text.as_bytes().to_vec()),
        Value::ServerError(error) => {
            Resp::Error(format!("{} {}", error.code(), error.details().unwrap_or_default()).trim_end().to_owned())
        }
        other => panic!("unexpected value from the redis crate: {other:?}"),
    }
}
