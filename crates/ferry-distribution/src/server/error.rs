//! Error answers in the OCI form (formats.md 3.4):
//! `{"errors":[{"code":"…","message":"…","detail":…}]}` with `Content-Type: application/json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One refusal: the HTTP status, the OCI error code and a one-line message.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
        }
    }

    pub(crate) fn not_found_path(path: &str) -> ApiError {
        let path: String = path.chars().take(200).collect();
        let message = format!("{path:?} is not an endpoint of this read-only registry");
        ApiError::new(StatusCode::NOT_FOUND, "UNSUPPORTED", message)
    }

    pub(crate) fn name_invalid(name: &str) -> ApiError {
        ApiError::name_invalid_because(name, "not a repository name")
    }

    pub(crate) fn name_invalid_because(name: &str, why: &str) -> ApiError {
        let name: String = name.chars().take(200).collect();
        let message = format!("invalid repository name {name:?}: {why}");
        ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", message)
    }

    pub(crate) fn name_unknown(name: &str, why: &str) -> ApiError {
        let message = format!("repository {name} is unknown: {why}");
        ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", message)
    }

    pub(crate) fn digest_invalid(text: &str) -> ApiError {
        let text: String = text.chars().take(200).collect();
        let message = format!("invalid digest {text:?}: expected sha256:<64 hex digits>");
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub(crate) fn manifest_unknown(what: &str) -> ApiError {
        let message = format!("manifest {what} is not in this image");
        ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
    }

    /// The content behind a descriptor is not the size it states (502: the image is bad,
    /// not the request).
    pub(crate) fn size_invalid(why: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "SIZE_INVALID", why.to_string())
    }

    /// The content fetched is not what its descriptor names (502: the image is bad, not the
    /// request).
    pub(crate) fn bad_content(why: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "UNKNOWN", why.to_string())
    }

    /// The blocks could not be fetched (503: may work later).
    pub(crate) fn unavailable(why: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN", why.to_string())
    }

    pub(crate) fn blob_unknown(what: &str) -> ApiError {
        let message = format!("blob {what} is not in this image");
        ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", message)
    }

    pub(crate) fn method(method: &str) -> ApiError {
        let message = format!("method {method} is not supported: this registry is read-only");
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }

    pub(crate) fn multi_range() -> ApiError {
        // stargz-snapshotter falls back to one range per request on a 400 (formats.md 3.3)
        let message = "multiple byte ranges in one request are not supported".to_string();
        ApiError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", message)
    }

    pub(crate) fn too_many() -> ApiError {
        let message = "too many requests at once; retry shortly".to_string();
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
    }

    pub(crate) fn internal(what: &str, why: &str) -> ApiError {
        let message = format!("{what}: {why}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", message)
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> String {
        serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        })
        .to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
