// user_client_e2e: the C++ client generated from proto/ (protoc + grpc_cpp_plugin)
// against a running user-service: create a user, read it back, update it with
// its etag (a stale etag is ABORTED), refresh it, read it in a batch, delete
// it, and the errors a caller branches on (ALREADY_EXISTS, NOT_FOUND, ABORTED).
//
//   build/user_client_e2e [HOST:PORT]     (default localhost:50051)
//
// Prints one line per check and "N passed, M failed"; exits 1 when any failed.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>

#include "user/v1/user.grpc.pb.h"

namespace {

using user::v1::BatchGetUsersRequest;
using user::v1::BatchGetUsersResponse;
using user::v1::CreateUserRequest;
using user::v1::CreateUserResponse;
using user::v1::GetUserRequest;
using user::v1::DeleteUserRequest;
using user::v1::DeleteUserResponse;
using user::v1::GetUserResponse;
using user::v1::RefreshUserRequest;
using user::v1::RefreshUserResponse;
using user::v1::UpdateUserRequest;
using user::v1::UpdateUserResponse;
using user::v1::UserService;

int passed = 0;
int failed = 0;

void check(bool ok, const std::string& what, const std::string& detail = "") {
  (ok ? passed : failed)++;
  std::cout << (ok ? "ok   " : "FAIL ") << what;
  if (!ok && !detail.empty()) std::cout << " (" << detail << ")";
  std::cout << std::endl;
}

std::string describe(const grpc::Status& status) {
  return "status " + std::to_string(status.error_code()) + ": " + status.error_message();
}

// Every call gets a deadline, as every caller of a networked service should.
void with_deadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string target = argc > 1 ? argv[1] : "localhost:50051";
  auto stub = UserService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  const std::string id = "cpp-" + std::to_string(getpid()) + "-" + std::to_string(unix_now());
  std::cout << "C++ client -> " << target << ", user " << id << std::endl;

  // Create with a 120 s time to live.
  CreateUserRequest create;
  create.set_id(id);
  create.set_name("Grace Hopper");
  create.set_email("grace@example.com");
  create.set_ttl_seconds(120);
  CreateUserResponse created;
  {
    grpc::ClientContext context;
    with_deadline(context);
    const int64_t before = unix_now();
    grpc::Status status = stub->CreateUser(&context, create, &created);
    check(status.ok(), "CreateUser answers OK", describe(status));
    check(created.user().id() == id && created.user().name() == "Grace Hopper" &&
              created.user().email() == "grace@example.com",
          "CreateUser returns the stored user");
    check(created.ttl_seconds() == 120, "CreateUser applies ttl_seconds=120",
          std::to_string(created.ttl_seconds()));
    const int64_t expires = created.expire_time().seconds();
    check(expires >= before + 115 && expires <= before + 125, "expire_time is about now + 120 s",
          std::to_string(expires - before));
  }

  // Read it back.
  {
    GetUserRequest get;
    get.set_id(id);
    GetUserResponse got;
    grpc::ClientContext context;
    with_deadline(context);
    grpc::Status status = stub->GetUser(&context, get, &got);
    check(status.ok(), "GetUser answers OK", describe(status));
    check(got.user().id() == id && got.user().name() == "Grace Hopper" &&
              got.user().email() == "grace@example.com",
          "GetUser returns the created user");
    const int64_t drift = got.expire_time().seconds() - created.expire_time().seconds();
    check(got.has_expire_time() && drift >= -2 && drift <= 2, "GetUser returns the same expire_time",
          std::to_string(drift));
  }

  // The same id again: ALREADY_EXISTS.
  {
    CreateUserResponse again;
    grpc::ClientContext context;
    with_deadline(context);
    grpc::Status status = stub->CreateUser(&context, create, &again);
    check(status.error_code() == grpc::StatusCode::ALREADY_EXISTS, "a second CreateUser is ALREADY_EXISTS",
          describe(status));
  }

  // An id nobody created: NOT_FOUND.
  {
    GetUserRequest get;
    get.set_id(id + "-absent");
    GetUserResponse got;
    grpc::ClientContext context;
    with_deadline(context);
    grpc::Status status = stub->GetUser(&context, get, &got);
    check(status.error_code() == grpc::StatusCode::NOT_FOUND, "GetUser of an absent id is NOT_FOUND",
          describe(status));
  }

  // Update the name with the etag create answered; the expiry is kept.
  std::string etag;
  {
    UpdateUserRequest update;
    update.mutable_user()->set_id(id);
    update.mutable_user()->set_name("Grace B. Hopper");
    update.mutable_update_mask()->add_paths("name");
    update.set_etag(created.etag());
    UpdateUserResponse updated;
    grpc::ClientContext context;
    with_deadline(context);
    grpc::Status status = stub->UpdateUser(&context, update, &updated);
    check(status.ok(), "UpdateUser with the current etag answers OK", describe(status));
    check(updated.user().name() == "Grace B. Hopper" && updated.user().email() == "grace@example.com",
          "UpdateUser changes the masked field only");
    check(!updated.etag().empty() && updated.etag() != created.etag(), "UpdateUser answers a new etag");
    const int64_t drift = updated.expire_time().seconds() - created.expire_time().seconds();
    check(drift >= -2 && drift <= 2, "UpdateUser keeps the expiry", std::to_string(drift));
    etag = updated.etag();

    UpdateUserResponse stale;
    grpc::ClientContext again;
    with_deadline(again);
    status = stub->UpdateUser(&again, update, &stale);
    check(status.error_code() == grpc::StatusCode::ABORTED, "UpdateUser with a stale etag is ABORTED",
          describe(status));
  }

  // Refresh: a new expiry, read in the same step.
  {
    RefreshUserRequest refresh;
    refresh.set_id(id);
    refresh.set_ttl_seconds(3600);
    RefreshUserResponse refreshed;
    grpc::ClientContext context;
    with_deadline(context);
    const int64_t before = unix_now();
    grpc::Status status = stub->RefreshUser(&context, refresh, &refreshed);
    check(status.ok(), "RefreshUser answers OK", describe(status));
    const int64_t expires = refreshed.expire_time().seconds();
    check(refreshed.ttl_seconds() == 3600 && expires >= before + 3595 && expires <= before + 3605,
          "RefreshUser moves expire_time to about now + 3600 s", std::to_string(expires - before));
    check(refreshed.etag() == etag, "RefreshUser leaves the etag as it was");
  }

  // Batch: found users in request order, the others in missing_ids.
  {
    BatchGetUsersRequest batch;
    batch.add_ids(id + "-absent");
    batch.add_ids(id);
    BatchGetUsersResponse got;
    grpc::ClientContext context;
    with_deadline(context);
    grpc::Status status = stub->BatchGetUsers(&context, batch, &got);
    check(status.ok(), "BatchGetUsers answers OK", describe(status));
    check(got.users_size() == 1 && got.users(0).user().id() == id && got.users(0).etag() == etag,
          "BatchGetUsers returns the user with its etag");
    check(got.missing_ids_size() == 1 && got.missing_ids(0) == id + "-absent",
          "BatchGetUsers lists the missing id");
  }

  // Delete with the etag, then the user is NOT_FOUND.
  {
    DeleteUserRequest remove;
    remove.set_id(id);
    remove.set_etag(etag);
    DeleteUserResponse deleted;
    grpc::ClientContext context;
    with_deadline(context);
    grpc::Status status = stub->DeleteUser(&context, remove, &deleted);
    check(status.ok(), "DeleteUser with the current etag answers OK", describe(status));

    GetUserRequest get;
    get.set_id(id);
    GetUserResponse got;
    grpc::ClientContext after;
    with_deadline(after);
    status = stub->GetUser(&after, get, &got);
    check(status.error_code() == grpc::StatusCode::NOT_FOUND, "GetUser after DeleteUser is NOT_FOUND",
          describe(status));
  }

  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 && passed > 0 ? 0 : 1;
}
