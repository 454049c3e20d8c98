//! The `hstream.server.HStreamApi` gRPC door: each RPC turns its request into a call on the
//! stream service ([`streamcell_service::Service`]: streams, shards, appends, readers, live
//! reads, subscriptions) or the engine (SQL, queries, views), and the answer or the error
//! (mapped once, in [`crate::error`]) into its response. RPCs of parts not built yet
//! (connectors, schemas, stats, admin commands, namespaces, ReadStreamByKey) answer
//! UNIMPLEMENTED with a message that says so.

use std::pin::Pin;
use std::sync::Arc;

use streamcell_engine::Engine;
use streamcell_proto::api::{self, ErrorCode};
use streamcell_service::records::timestamp;
use streamcell_service::{
    Deletion, LiveRead, Position, ReaderSpec, Service, ServiceError, StreamSpec, SubscriptionSpec,
};
use streamcell_store::{StreamMeta, SubscriptionMeta};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::{status, unimplemented};

/// The gRPC service: the stream service and the engine behind HStreamDB's RPCs.
pub struct StreamApi {
    service: Arc<Service>,
    engine: Arc<Engine>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl StreamApi {
    /// The door over `service` and `engine`.
    pub fn new(service: Arc<Service>, engine: Arc<Engine>) -> Self {
        StreamApi { service, engine }
    }

    fn engine(&self) -> Result<&Arc<Engine>, Status> {
        Ok(&self.engine)
    }

    fn server_node(&self) -> api::ServerNode {
        let node = self.service.node();
        api::ServerNode {
            id: node.id,
            host: node.host.clone(),
            port: node.port,
            version: Some(api::HStreamVersion {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: String::new(),
            }),
        }
    }
}

/// A stream as HStreamDB's `Stream` message.
pub fn stream_pb(m: &StreamMeta) -> api::Stream {
    api::Stream {
        stream_name: m.name.clone(),
        replication_factor: m.replication_factor,
        backlog_duration: m.backlog_secs,
        shard_count: m.shard_count,
        creation_time: Some(timestamp(m.created_ms)),
    }
}

/// A subscription's definition as HStreamDB's `Subscription` message.
pub fn subscription_pb(m: &SubscriptionMeta) -> api::Subscription {
    api::Subscription {
        subscription_id: m.id.clone(),
        stream_name: m.stream.clone(),
        ack_timeout_seconds: m.ack_timeout_secs as i32,
        max_unacked_records: m.max_unacked as i32,
        offset: m.offset,
        creation_time: Some(timestamp(m.created_ms)),
    }
}

/// A live read's messages as a response stream, each wrapped by `wrap`.
fn live<T: Send + 'static>(
    read: LiveRead,
    wrap: fn(Vec<api::ReceivedRecord>) -> T,
) -> BoxStream<T> {
    Box::pin(ReceiverStream::new(read).map(move |m| m.map(wrap).map_err(status)))
}

#[tonic::async_trait]
impl api::h_stream_api_server::HStreamApi for StreamApi {
    async fn echo(
        &self,
        request: Request<api::EchoRequest>,
    ) -> Result<Response<api::EchoResponse>, Status> {
        Ok(Response::new(api::EchoResponse {
            msg: request.into_inner().msg,
        }))
    }

    async fn describe_cluster(
        &self,
        _request: Request<()>,
    ) -> Result<Response<api::DescribeClusterResponse>, Status> {
        let node = self.server_node();
        Ok(Response::new(api::DescribeClusterResponse {
            protocol_version: "0.1.0".into(),
            server_nodes: vec![node.clone()],
            server_nodes_status: vec![api::ServerNodeStatus {
                node: Some(node),
                state: api::NodeState::Running as i32,
            }],
            cluster_up_time: self.service.uptime().as_secs(),
        }))
    }

    async fn create_stream(
        &self,
        request: Request<api::Stream>,
    ) -> Result<Response<api::Stream>, Status> {
        let req = request.into_inner();
        let meta = self
            .service
            .create_stream(StreamSpec {
                name: req.stream_name,
                replication_factor: req.replication_factor,
                backlog_secs: req.backlog_duration,
                shard_count: req.shard_count,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(stream_pb(&meta)))
    }

    async fn delete_stream(
        &self,
        request: Request<api::DeleteStreamRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let _: Deletion = self
            .service
            .delete_stream(&req.stream_name, req.force, req.ignore_non_exist)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn get_stream(
        &self,
        request: Request<api::GetStreamRequest>,
    ) -> Result<Response<api::GetStreamResponse>, Status> {
        let meta = self
            .service
            .stream_meta(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(api::GetStreamResponse {
            stream: Some(stream_pb(&meta)),
        }))
    }

    async fn list_streams(
        &self,
        _request: Request<api::ListStreamsRequest>,
    ) -> Result<Response<api::ListStreamsResponse>, Status> {
        let all = self.service.list_streams().await.map_err(status)?;
        Ok(Response::new(api::ListStreamsResponse {
            streams: all.iter().map(stream_pb).collect(),
        }))
    }

    async fn list_streams_with_prefix(
        &self,
        request: Request<api::ListStreamsWithPrefixRequest>,
    ) -> Result<Response<api::ListStreamsResponse>, Status> {
        let prefix = request.into_inner().prefix;
        let all = self.service.list_streams().await.map_err(status)?;
        Ok(Response::new(api::ListStreamsResponse {
            streams: all
                .iter()
                .filter(|m| m.name.starts_with(&prefix))
                .map(stream_pb)
                .collect(),
        }))
    }

    async fn list_shards(
        &self,
        request: Request<api::ListShardsRequest>,
    ) -> Result<Response<api::ListShardsResponse>, Status> {
        let name = request.into_inner().stream_name;
        let shards = self.service.list_shards(&name).await.map_err(status)?;
        Ok(Response::new(api::ListShardsResponse {
            shards: shards
                .into_iter()
                .map(|m| api::Shard {
                    stream_name: m.stream,
                    shard_id: m.id,
                    start_hash_range_key: m.start_key,
                    end_hash_range_key: m.end_key,
                    epoch: m.epoch,
                    is_active: true,
                })
                .collect(),
        }))
    }

    async fn lookup_shard(
        &self,
        request: Request<api::LookupShardRequest>,
    ) -> Result<Response<api::LookupShardResponse>, Status> {
        let shard = request.into_inner().shard_id;
        self.service.shard_meta(None, shard).map_err(status)?;
        Ok(Response::new(api::LookupShardResponse {
            shard_id: shard,
            server_node: Some(self.server_node()),
        }))
    }

    async fn append(
        &self,
        request: Request<api::AppendRequest>,
    ) -> Result<Response<api::AppendResponse>, Status> {
        let req = request.into_inner();
        let appended = self
            .service
            .append(&req.stream_name, req.shard_id, req.records)
            .await
            .map_err(status)?;
        Ok(Response::new(api::AppendResponse {
            stream_name: req.stream_name,
            shard_id: req.shard_id,
            record_ids: (0..appended.record_count)
                .map(|i| api::RecordId {
                    shard_id: req.shard_id,
                    batch_id: appended.seq,
                    batch_index: i,
                })
                .collect(),
        }))
    }

    async fn get_tail_record_id(
        &self,
        request: Request<api::GetTailRecordIdRequest>,
    ) -> Result<Response<api::GetTailRecordIdResponse>, Status> {
        let req = request.into_inner();
        let tail = self
            .service
            .tail(&req.stream_name, req.shard_id)
            .map_err(status)?;
        Ok(Response::new(api::GetTailRecordIdResponse {
            tail_record_id: Some(api::RecordId {
                shard_id: req.shard_id,
                batch_id: tail,
                batch_index: 0,
            }),
        }))
    }

    async fn trim_stream(
        &self,
        request: Request<api::TrimStreamRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let to = Position::from_stream_offset(req.trim_point.as_ref()).map_err(status)?;
        self.service
            .trim_stream(&req.stream_name, to)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn trim_shard(
        &self,
        request: Request<api::TrimShardRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        self.service
            .shard_meta(Some(&req.stream_name), req.shard_id)
            .map_err(status)?;
        let to =
            Position::from_shard_offset(req.trim_point.as_ref(), req.shard_id).map_err(status)?;
        self.service
            .trim_shard(&req.stream_name, req.shard_id, to)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn create_shard_reader(
        &self,
        request: Request<api::CreateShardReaderRequest>,
    ) -> Result<Response<api::CreateShardReaderResponse>, Status> {
        let req = request.into_inner();
        // The name and the shard are checked before the offset, as HStreamDB does.
        streamcell_service::names::validate_name(
            "shard reader",
            &req.reader_id,
            ErrorCode::ShardReaderInvalidObjectIdentifier,
        )
        .map_err(status)?;
        self.service
            .shard_meta(Some(&req.stream_name), req.shard_id)
            .map_err(status)?;
        let from =
            Position::from_shard_offset(req.shard_offset.as_ref(), req.shard_id).map_err(status)?;
        self.service
            .create_reader(ReaderSpec {
                id: req.reader_id.clone(),
                stream: req.stream_name.clone(),
                shard: req.shard_id,
                from,
                timeout_ms: req.timeout,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(api::CreateShardReaderResponse {
            stream_name: req.stream_name,
            shard_id: req.shard_id,
            shard_offset: req.shard_offset,
            reader_id: req.reader_id,
            timeout: req.timeout,
        }))
    }

    async fn lookup_shard_reader(
        &self,
        request: Request<api::LookupShardReaderRequest>,
    ) -> Result<Response<api::LookupShardReaderResponse>, Status> {
        let id = request.into_inner().reader_id;
        self.service.reader(&id).await.map_err(status)?;
        Ok(Response::new(api::LookupShardReaderResponse {
            reader_id: id,
            server_node: Some(self.server_node()),
        }))
    }

    async fn read_shard(
        &self,
        request: Request<api::ReadShardRequest>,
    ) -> Result<Response<api::ReadShardResponse>, Status> {
        let req = request.into_inner();
        let received_records = self
            .service
            .read_reader(&req.reader_id, req.max_records as usize)
            .await
            .map_err(status)?;
        Ok(Response::new(api::ReadShardResponse { received_records }))
    }

    async fn list_shard_readers(
        &self,
        _request: Request<api::ListShardReadersRequest>,
    ) -> Result<Response<api::ListShardReadersResponse>, Status> {
        let all = self.service.list_readers().await.map_err(status)?;
        Ok(Response::new(api::ListShardReadersResponse {
            reader_id: all.into_iter().map(|r| r.id).collect(),
        }))
    }

    async fn delete_shard_reader(
        &self,
        request: Request<api::DeleteShardReaderRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().reader_id;
        self.service.delete_reader(&id).await.map_err(status)?;
        Ok(Response::new(()))
    }

    type ReadShardStreamStream = BoxStream<api::ReadShardStreamResponse>;

    async fn read_shard_stream(
        &self,
        request: Request<api::ReadShardStreamRequest>,
    ) -> Result<Response<Self::ReadShardStreamStream>, Status> {
        let req = request.into_inner();
        let shard = req.shard_id;
        self.service.shard_meta(None, shard).map_err(status)?;
        let from = Position::from_shard_offset(req.from.as_ref(), shard).map_err(status)?;
        let until = req
            .until
            .as_ref()
            .map(|u| Position::from_shard_offset(Some(u), shard))
            .transpose()
            .map_err(status)?;
        let read = self
            .service
            .read_shard_live(shard, from, until, req.max_read_batches)
            .await
            .map_err(status)?;
        Ok(Response::new(live(read, |received_records| {
            api::ReadShardStreamResponse { received_records }
        })))
    }

    type ReadStreamStream = BoxStream<api::ReadStreamResponse>;

    async fn read_stream(
        &self,
        request: Request<api::ReadStreamRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        let req = request.into_inner();
        let from = match req.from.as_ref() {
            Some(_) => Position::from_stream_offset(req.from.as_ref()).map_err(status)?,
            None => Position::Earliest,
        };
        let until = req
            .until
            .as_ref()
            .map(|u| Position::from_stream_offset(Some(u)))
            .transpose()
            .map_err(status)?;
        let read = self
            .service
            .read_stream_live(&req.stream_name, from, until, req.max_read_batches)
            .await
            .map_err(status)?;
        Ok(Response::new(live(read, |received_records| {
            api::ReadStreamResponse { received_records }
        })))
    }

    type ReadSingleShardStreamStream = BoxStream<api::ReadSingleShardStreamResponse>;

    async fn read_single_shard_stream(
        &self,
        request: Request<api::ReadSingleShardStreamRequest>,
    ) -> Result<Response<Self::ReadSingleShardStreamStream>, Status> {
        let req = request.into_inner();
        let shard = self
            .service
            .single_shard(&req.stream_name)
            .await
            .map_err(status)?;
        let from = Position::from_shard_offset(req.from.as_ref(), shard).map_err(status)?;
        let until = req
            .until
            .as_ref()
            .map(|u| Position::from_shard_offset(Some(u), shard))
            .transpose()
            .map_err(status)?;
        let read = self
            .service
            .read_shard_live(shard, from, until, req.max_read_batches)
            .await
            .map_err(status)?;
        Ok(Response::new(live(read, |received_records| {
            api::ReadSingleShardStreamResponse { received_records }
        })))
    }

    async fn lookup_resource(
        &self,
        _request: Request<api::LookupResourceRequest>,
    ) -> Result<Response<api::ServerNode>, Status> {
        Ok(Response::new(self.server_node()))
    }

    async fn lookup_key(
        &self,
        _request: Request<api::LookupKeyRequest>,
    ) -> Result<Response<api::ServerNode>, Status> {
        Ok(Response::new(self.server_node()))
    }

    type ReadStreamByKeyStream = BoxStream<api::ReadStreamByKeyResponse>;
    type StreamingFetchStream = BoxStream<api::StreamingFetchResponse>;

    async fn read_stream_by_key(
        &self,
        _request: Request<Streaming<api::ReadStreamByKeyRequest>>,
    ) -> Result<Response<Self::ReadStreamByKeyStream>, Status> {
        Err(unimplemented("ReadStreamByKey"))
    }

    async fn create_subscription(
        &self,
        request: Request<api::Subscription>,
    ) -> Result<Response<api::Subscription>, Status> {
        let req = request.into_inner();
        let created = self
            .service
            .create_subscription(SubscriptionSpec {
                id: req.subscription_id,
                stream: req.stream_name,
                ack_timeout_secs: req.ack_timeout_seconds,
                max_unacked: req.max_unacked_records,
                offset: req.offset,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(subscription_pb(&created)))
    }

    async fn get_subscription(
        &self,
        request: Request<api::GetSubscriptionRequest>,
    ) -> Result<Response<api::GetSubscriptionResponse>, Status> {
        let id = request.into_inner().id;
        let sub = self.service.subscription(&id).await.map_err(status)?;
        Ok(Response::new(api::GetSubscriptionResponse {
            subscription: Some(subscription_pb(&sub.meta)),
            offsets: sub
                .offsets
                .into_iter()
                .map(|(shard_id, batch_id)| api::SubscriptionOffset { shard_id, batch_id })
                .collect(),
            streamcell_held_shards: sub
                .held
                .into_iter()
                .map(|h| api::HeldShard {
                    shard_id: h.shard,
                    batch_id: h.batch,
                    reason: h.reason,
                    since: Some(timestamp(h.since_ms)),
                })
                .collect(),
        }))
    }

    async fn list_subscriptions(
        &self,
        _request: Request<api::ListSubscriptionsRequest>,
    ) -> Result<Response<api::ListSubscriptionsResponse>, Status> {
        let all = self.service.list_subscriptions().await.map_err(status)?;
        Ok(Response::new(api::ListSubscriptionsResponse {
            subscription: all.iter().map(subscription_pb).collect(),
        }))
    }

    async fn list_subscriptions_with_prefix(
        &self,
        request: Request<api::ListSubscriptionsWithPrefixRequest>,
    ) -> Result<Response<api::ListSubscriptionsResponse>, Status> {
        let prefix = request.into_inner().prefix;
        let all = self.service.list_subscriptions().await.map_err(status)?;
        Ok(Response::new(api::ListSubscriptionsResponse {
            subscription: all
                .iter()
                .filter(|m| m.id.starts_with(&prefix))
                .map(subscription_pb)
                .collect(),
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<api::ListConsumersRequest>,
    ) -> Result<Response<api::ListConsumersResponse>, Status> {
        let id = request.into_inner().subscription_id;
        let consumers = self.service.list_consumers(&id).await.map_err(status)?;
        Ok(Response::new(api::ListConsumersResponse {
            consumers: consumers
                .into_iter()
                .map(|c| api::Consumer {
                    name: c.name,
                    uri: c.uri,
                    user_agent: c.user_agent,
                })
                .collect(),
        }))
    }

    async fn check_subscription_exist(
        &self,
        request: Request<api::CheckSubscriptionExistRequest>,
    ) -> Result<Response<api::CheckSubscriptionExistResponse>, Status> {
        let id = request.into_inner().subscription_id;
        Ok(Response::new(api::CheckSubscriptionExistResponse {
            exists: self.service.subscription_exists(&id),
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<api::DeleteSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        self.service
            .delete_subscription(&req.subscription_id, req.force)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn lookup_subscription(
        &self,
        request: Request<api::LookupSubscriptionRequest>,
    ) -> Result<Response<api::LookupSubscriptionResponse>, Status> {
        let id = request.into_inner().subscription_id;
        if !self.service.subscription_exists(&id) {
            return Err(status(ServiceError::Store(
                streamcell_store::StoreError::SubscriptionNotFound(id),
            )));
        }
        Ok(Response::new(api::LookupSubscriptionResponse {
            subscription_id: id,
            server_node: Some(self.server_node()),
        }))
    }

    async fn streaming_fetch(
        &self,
        request: Request<Streaming<api::StreamingFetchRequest>>,
    ) -> Result<Response<Self::StreamingFetchStream>, Status> {
        let uri = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut inbound = request.into_inner();
        let Some(first) = inbound.message().await? else {
            return Err(status(ServiceError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                "the fetch stream ended before its first message (subscriptionId, consumerName)",
            )));
        };
        let consumer = self
            .service
            .join(&first.subscription_id, &first.consumer_name, uri, agent)
            .await
            .map_err(status)?;
        let acker = consumer.acker();
        acker.ack(first.ack_ids);
        let sub_id = first.subscription_id;
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if !m.subscription_id.is_empty() && m.subscription_id != sub_id {
                    acker.kick(ServiceError::invalid(
                        ErrorCode::SubscriptionInvalidObjectIdentifier,
                        format!(
                            "this fetch stream belongs to subscription {sub_id:?}, not {:?}",
                            m.subscription_id
                        ),
                    ));
                    break;
                }
                acker.ack(m.ack_ids);
            }
            acker.leave();
        });
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(consumer.deliveries).map(|m| m.map_err(status)),
        )))
    }

    async fn send_admin_command(
        &self,
        _request: Request<api::AdminCommandRequest>,
    ) -> Result<Response<api::AdminCommandResponse>, Status> {
        Err(unimplemented("SendAdminCommand"))
    }

    async fn per_stream_time_series_stats(
        &self,
        _request: Request<api::PerStreamTimeSeriesStatsRequest>,
    ) -> Result<Response<api::PerStreamTimeSeriesStatsResponse>, Status> {
        Err(unimplemented("PerStreamTimeSeriesStats"))
    }

    async fn per_stream_time_series_stats_all(
        &self,
        _request: Request<api::PerStreamTimeSeriesStatsAllRequest>,
    ) -> Result<Response<api::PerStreamTimeSeriesStatsAllResponse>, Status> {
        Err(unimplemented("PerStreamTimeSeriesStatsAll"))
    }

    async fn get_stats(
        &self,
        _request: Request<api::GetStatsRequest>,
    ) -> Result<Response<api::GetStatsResponse>, Status> {
        Err(unimplemented("GetStats"))
    }

    async fn execute_query(
        &self,
        request: Request<api::CommandQuery>,
    ) -> Result<Response<api::CommandQueryResponse>, Status> {
        let engine = self.engine()?.clone();
        let sql = request.into_inner().stmt_text;
        crate::sql::execute_query(&engine, &sql)
            .await
            .map(Response::new)
            .map_err(|e| {
                let status = crate::sql::status(&e);
                let code = match status.code() {
                    tonic::Code::NotFound => ErrorCode::StreamNotFound,
                    tonic::Code::AlreadyExists => ErrorCode::QueryExists,
                    tonic::Code::Internal => ErrorCode::InternalError,
                    _ => ErrorCode::QueryInvalidSql,
                };
                Status::new(status.code(), crate::error::body(code, &e.to_string()))
            })
    }

    async fn create_query(
        &self,
        request: Request<api::CreateQueryRequest>,
    ) -> Result<Response<api::Query>, Status> {
        let req = request.into_inner();
        let engine = self.engine()?.clone();
        let q = engine
            .create_query(&req.sql, &req.query_name)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::StreamNotFound))?;
        Ok(Response::new(crate::sql::query_pb(
            &q,
            self.service.node().id,
        )))
    }

    async fn create_query_with_namespace(
        &self,
        _request: Request<api::CreateQueryWithNamespaceRequest>,
    ) -> Result<Response<api::Query>, Status> {
        Err(unimplemented("CreateQueryWithNamespace"))
    }

    async fn list_queries(
        &self,
        _request: Request<api::ListQueriesRequest>,
    ) -> Result<Response<api::ListQueriesResponse>, Status> {
        let engine = self.engine()?;
        Ok(Response::new(api::ListQueriesResponse {
            queries: engine
                .list()
                .iter()
                .map(|q| crate::sql::query_pb(q, self.service.node().id))
                .collect(),
        }))
    }

    async fn get_query(
        &self,
        request: Request<api::GetQueryRequest>,
    ) -> Result<Response<api::Query>, Status> {
        let id = request.into_inner().id;
        let q = self
            .engine()?
            .get(&id)
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(crate::sql::query_pb(
            &q,
            self.service.node().id,
        )))
    }

    async fn terminate_query(
        &self,
        request: Request<api::TerminateQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().query_id;
        crate::sql::manage::terminate(self.engine()?, &id)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn delete_query(
        &self,
        request: Request<api::DeleteQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        crate::sql::manage::delete(self.engine()?, &id, false, false)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn resume_query(
        &self,
        request: Request<api::ResumeQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        crate::sql::manage::pause(self.engine()?, &id, false)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn pause_query(
        &self,
        request: Request<api::PauseQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        crate::sql::manage::pause(self.engine()?, &id, true)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn parse_sql(
        &self,
        request: Request<api::ParseSqlRequest>,
    ) -> Result<Response<api::ParseSqlResponse>, Status> {
        let sql = request.into_inner().sql;
        let view = self
            .engine()?
            .view_of_query(&sql)
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::ViewNotFound))?;
        Ok(Response::new(api::ParseSqlResponse {
            sql: Some(api::parse_sql_response::Sql::EvqSql(
                api::ExecuteViewQuerySql { view },
            )),
        }))
    }

    async fn register_schema(
        &self,
        _request: Request<api::Schema>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RegisterSchema"))
    }

    async fn get_schema(
        &self,
        _request: Request<api::GetSchemaRequest>,
    ) -> Result<Response<api::Schema>, Status> {
        Err(unimplemented("GetSchema"))
    }

    async fn unregister_schema(
        &self,
        _request: Request<api::UnregisterSchemaRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("UnregisterSchema"))
    }

    async fn create_connector(
        &self,
        _request: Request<api::CreateConnectorRequest>,
    ) -> Result<Response<api::Connector>, Status> {
        Err(unimplemented("CreateConnector"))
    }

    async fn list_connectors(
        &self,
        _request: Request<api::ListConnectorsRequest>,
    ) -> Result<Response<api::ListConnectorsResponse>, Status> {
        Err(unimplemented("ListConnectors"))
    }

    async fn get_connector(
        &self,
        _request: Request<api::GetConnectorRequest>,
    ) -> Result<Response<api::Connector>, Status> {
        Err(unimplemented("GetConnector"))
    }

    async fn get_connector_spec(
        &self,
        _request: Request<api::GetConnectorSpecRequest>,
    ) -> Result<Response<api::GetConnectorSpecResponse>, Status> {
        Err(unimplemented("GetConnectorSpec"))
    }

    async fn get_connector_logs(
        &self,
        _request: Request<api::GetConnectorLogsRequest>,
    ) -> Result<Response<api::GetConnectorLogsResponse>, Status> {
        Err(unimplemented("GetConnectorLogs"))
    }

    async fn delete_connector(
        &self,
        _request: Request<api::DeleteConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("DeleteConnector"))
    }

    async fn pause_connector(
        &self,
        _request: Request<api::PauseConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("PauseConnector"))
    }

    async fn resume_connector(
        &self,
        _request: Request<api::ResumeConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("ResumeConnector"))
    }

    async fn list_views(
        &self,
        _request: Request<api::ListViewsRequest>,
    ) -> Result<Response<api::ListViewsResponse>, Status> {
        let engine = self.engine()?;
        Ok(Response::new(api::ListViewsResponse {
            views: engine
                .list()
                .iter()
                .filter(|q| q.kind == streamcell_engine::QueryKind::View)
                .map(crate::sql::view_pb)
                .collect(),
        }))
    }

    async fn get_view(
        &self,
        request: Request<api::GetViewRequest>,
    ) -> Result<Response<api::View>, Status> {
        let id = request.into_inner().view_id;
        match self.engine()?.get(&id) {
            Ok(q) if q.kind == streamcell_engine::QueryKind::View => {
                Ok(Response::new(crate::sql::view_pb(&q)))
            }
            _ => Err(status(ServiceError::not_found(
                ErrorCode::ViewNotFound,
                format!("view {id:?} does not exist"),
            ))),
        }
    }

    async fn delete_view(
        &self,
        request: Request<api::DeleteViewRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        crate::sql::manage::delete(self.engine()?, &req.view_id, true, req.ignore_non_exist)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::ViewNotFound))?;
        Ok(Response::new(()))
    }

    async fn execute_view_query(
        &self,
        request: Request<api::ExecuteViewQueryRequest>,
    ) -> Result<Response<api::ExecuteViewQueryResponse>, Status> {
        let sql = request.into_inner().sql;
        let results = crate::sql::manage::view_query(self.engine()?, &sql)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::ViewNotFound))?;
        Ok(Response::new(api::ExecuteViewQueryResponse { results }))
    }

    async fn execute_view_query_with_namespace(
        &self,
        _request: Request<api::ExecuteViewQueryWithNamespaceRequest>,
    ) -> Result<Response<api::ExecuteViewQueryResponse>, Status> {
        Err(unimplemented("ExecuteViewQueryWithNamespace"))
    }
}
