//! EC2 error codes → [`CloudError`], so the pool reacts to EC2 exactly as it
//! reacts to the simulator.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::{CloudError, EniId};

/// What the caller knew when the call failed, for the variants that carry it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Context<'a> {
    /// The ENI the call was about.
    pub eni: Option<&'a EniId>,
    /// The subnet the call was about.
    pub subnet: Option<&'a str>,
    /// The instance type and its ENI limit.
    pub instance_type: Option<(&'a str, u32)>,
    /// The ENI's IPv4 limit (primary included).
    pub ip_limit: Option<u32>,
}

/// Maps one SDK error. `operation` is the EC2 action, e.g. `"AttachNetworkInterface"`.
pub(crate) fn map<E>(
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
    ctx: &Context<'_>,
) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => CloudError::Timeout { operation },
        SdkError::DispatchFailure(d) if d.is_timeout() => CloudError::Timeout { operation },
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("").to_string();
            let message = err.message().unwrap_or("").to_string();
            from_code(operation, status, &code, &message, ctx)
        }
        _ => CloudError::Api {
            operation,
            message: describe(&err),
        },
    }
}

/// The mapping itself, pure so it is tested without the SDK.
pub(crate) fn from_code(
    operation: &'static str,
    status: u16,
    code: &str,
    message: &str,
    ctx: &Context<'_>,
) -> CloudError {
    let unknown = || "unknown".to_string();
    match code {
        "InsufficientFreeAddressesInSubnet" => CloudError::SubnetFull {
            subnet: ctx.subnet.map_or_else(unknown, str::to_string),
        },
        "InsufficientCidrBlocks" => CloudError::NoFreeCidrBlocks {
            subnet: ctx.subnet.map_or_else(unknown, str::to_string),
        },
        "AttachmentLimitExceeded" => {
            let (instance_type, limit) = ctx.instance_type.unwrap_or(("unknown", 0));
            CloudError::EniLimit {
                instance_type: instance_type.to_string(),
                limit,
            }
        }
        "PrivateIpAddressLimitExceeded" => CloudError::IpLimit {
            eni: ctx.eni.cloned().unwrap_or_else(|| EniId(unknown())),
            limit: ctx.ip_limit.unwrap_or(0),
        },
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
            CloudError::Throttled { operation }
        }
        "UnauthorizedOperation" | "AuthFailure" | "Blocked" | "OptInRequired" => {
            CloudError::Unauthorized {
                operation,
                message: message.to_string(),
            }
        }
        c if c.ends_with(".NotFound") => CloudError::NotFound {
            what: if message.is_empty() {
                c.to_string()
            } else {
                message.to_string()
            },
        },
        c => {
            let message = if c.is_empty() {
                message.to_string()
            } else {
                format!("{c}: {message}")
            };
            // A 4xx is a verdict on the request; a 5xx (or no status) may
            // pass if retried.
            if (400..500).contains(&status) {
                CloudError::Rejected { operation, message }
            } else {
                CloudError::Api { operation, message }
            }
        }
    }
}

/// The error with its sources, one line (the SDK's top-level Display is
/// often just "dispatch failure").
fn describe(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_typed_errors() {
        let eni = EniId("eni-1".into());
        let ctx = Context {
            eni: Some(&eni),
            subnet: Some("subnet-1"),
            instance_type: Some(("m5.large", 3)),
            ip_limit: Some(10),
        };
        let op = "AssignPrivateIpAddresses";
        assert_eq!(
            from_code(op, 400, "InsufficientFreeAddressesInSubnet", "", &ctx),
            CloudError::SubnetFull {
                subnet: "subnet-1".into()
            }
        );
        assert_eq!(
            from_code(op, 400, "InsufficientCidrBlocks", "", &ctx),
            CloudError::NoFreeCidrBlocks {
                subnet: "subnet-1".into()
            }
        );
        assert_eq!(
            from_code(op, 400, "AttachmentLimitExceeded", "", &ctx),
            CloudError::EniLimit {
                instance_type: "m5.large".into(),
                limit: 3
            }
        );
        assert_eq!(
            from_code(op, 400, "PrivateIpAddressLimitExceeded", "", &ctx),
            CloudError::IpLimit {
                eni: eni.clone(),
                limit: 10
            }
        );
        assert_eq!(
            from_code(op, 400, "RequestLimitExceeded", "slow down", &ctx),
            CloudError::Throttled { operation: op }
        );
        assert_eq!(
            from_code(
                op,
                400,
                "InvalidNetworkInterfaceID.NotFound",
                "eni-1 gone",
                &ctx
            ),
            CloudError::NotFound {
                what: "eni-1 gone".into()
            }
        );
        assert_eq!(
            from_code(op, 400, "UnauthorizedOperation", "no", &ctx),
            CloudError::Unauthorized {
                operation: op,
                message: "no".into()
            }
        );
        assert_eq!(
            from_code(op, 400, "InvalidParameterValue", "bad", &ctx),
            CloudError::Rejected {
                operation: op,
                message: "InvalidParameterValue: bad".into()
            }
        );
        assert_eq!(
            from_code(op, 500, "InternalError", "oops", &ctx),
            CloudError::Api {
                operation: op,
                message: "InternalError: oops".into()
            }
        );
    }
}
