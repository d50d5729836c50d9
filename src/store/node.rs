//! `NodeConnection`: the connection the cluster client opens to each node,
//! a multiplexed connection that does not send `CLIENT SETINFO`. It only
//! changes how a node connection is set up; routing stays with redis-rs.
//!
//! redis-rs opens cluster node connections with default settings, which
//! send `CLIENT SETINFO LIB-NAME`/`LIB-VER` after logging in, and its
//! cluster builder has no switch to skip them (standalone connections have
//! `set_skip_set_lib_name`). Redis 7.0 answers "unknown subcommand"; 7.2+
//! refuses them for a least-privilege ACL user and records each refusal in
//! `ACL LOG`, while an ACL file that 7.0 loads cannot grant
//! `client|setinfo`. So the cluster client is built over this type, which
//! sets that switch on every node's settings.

use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster_async::Connect,
};

/// A cluster node connection that skips `CLIENT SETINFO`; see the module docs.
#[derive(Clone)]
pub struct NodeConnection(MultiplexedConnection);

impl Connect for NodeConnection {
    fn connect_with_config<'a, T>(info: T, config: AsyncConnectionConfig) -> RedisFuture<'a, Self>
    where
        T: IntoConnectionInfo + Send + 'a,
    {
        Box::pin(async move {
            let info = info.into_connection_info()?;
            let settings = info.redis_settings().clone().set_skip_set_lib_name();
            let client = Client::open(info.set_redis_settings(settings))?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok(Self(conn))
        })
    }
}

impl ConnectionLike for NodeConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
