//! Standard gRPC tooling works: health checks and server reflection (v1 and v1alpha).

mod common;

use common::{TestServer, config};
use prost::Message;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

#[tokio::test]
async fn health_is_serving_while_open_and_not_serving_once_shutdown_starts() {
    let mut server = TestServer::start(config()).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "log.v1.Log"] {
        let status = health.check(check(service)).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health.watch(check("log.v1.Log")).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    server.signal_stop();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    drop(watch);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_v1_lists_the_services_and_describes_log_v1() {
    let server = TestServer::start(config()).await;
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request =
        |message| v1::ServerReflectionRequest { host: String::new(), message_request: Some(message) };
    let requests = tokio_stream::iter([
        request(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        request(v1::server_reflection_request::MessageRequest::FileContainingSymbol("log.v1.Log".into())),
    ]);
    let mut answers = reflection.server_reflection_info(requests).await.unwrap().into_inner();

    let listed = answers.message().await.unwrap().unwrap().message_response.unwrap();
    let v1::server_reflection_response::MessageResponse::ListServicesResponse(listed) = listed else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<_> = listed.service.into_iter().map(|s| s.name).collect();
    for name in ["log.v1.Log", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }

    let file = answers.message().await.unwrap().unwrap().message_response.unwrap();
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(file) = file else {
        panic!("expected a file descriptor, got {file:?}");
    };
    let file = prost_types::FileDescriptorProto::decode(&file.file_descriptor_proto[0][..]).unwrap();
    assert_eq!(file.package(), "log.v1");
    let service = &file.service[0];
    let methods: Vec<_> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["Produce", "Consume", "ConsumeStream", "ProduceStream", "GetServers"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_v1alpha_answers_too() {
    let server = TestServer::start(config()).await;
    let mut reflection =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let listed = answers.message().await.unwrap().unwrap().message_response.unwrap();
    let v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(listed) = listed else {
        panic!("expected a service list, got {listed:?}");
    };
    assert!(listed.service.iter().any(|s| s.name == "log.v1.Log"));
    server.stop().await.unwrap();
}
