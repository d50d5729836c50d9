//! Server reflection in both versions (`grpc.reflection.v1` and
//! `v1alpha`): clients other than grpcurl (Postman, newer grpcurl) use v1.

use tonic_reflection::pb::{v1, v1alpha};

use crate::support::{App, RedisServer, ServiceEnv};

const EXPECTED: [&str; 2] = ["user.v1.UserService", "grpc.health.v1.Health"];

#[tokio::test]
async fn reflection_v1_lists_the_user_and_health_services() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(service.channel());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };

    // Act
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1 is served")
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");

    // Assert
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a list of services: {:?}", response.message_response);
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in EXPECTED {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_user_and_health_services() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(service.channel());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };

    // Act
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha is served")
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");

    // Assert
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a list of services: {:?}", response.message_response);
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in EXPECTED {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}
