import type { Operation } from "./types.js";

/**
 * Errors: every answer Herald gives with problem details (RFC 9457) becomes an
 * {@link ApiError} subclass chosen by its stable `code`; the rest are transport errors.
 */

/** The problem-details body Herald answers errors with. */
export interface ProblemDetails {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  [extra: string]: unknown;
}

/** Base of every error this SDK throws. */
export class HeraldError extends Error {
  override name = "HeraldError";
}

/** The request got no HTTP answer (connection refused, reset, timed out). */
export class TransportError extends HeraldError {
  override name = "TransportError";
}

/** Herald answered something this SDK cannot read. */
export class DecodeError extends HeraldError {
  override name = "DecodeError";
}

/** Herald answered with problem details; `code` is the stable one (`NOT_FOUND`, `LEASE_STALE`…). */
export class ApiError extends HeraldError {
  override name = "ApiError";
  readonly status: number;
  readonly code: string;
  readonly title: string;
  readonly detail: string;
  readonly type: string;
  readonly problem: ProblemDetails;
  /** `Retry-After` in seconds (429 and 503), when given. */
  readonly retryAfter: number | undefined;

  constructor(status: number, problem: ProblemDetails, retryAfter?: number) {
    const code = problem.code ?? "UNKNOWN";
    super(`Herald answered ${status} ${code}: ${problem.detail ?? problem.title ?? ""}`);
    this.status = status;
    this.code = code;
    this.title = problem.title ?? "";
    this.detail = problem.detail ?? "";
    this.type = problem.type ?? "about:blank";
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

/** 400/422: `INVALID_JSON`, `INVALID_REQUEST`, `SCHEMA_VIOLATION`, `LIMIT_REACHED`. */
export class InvalidRequestError extends ApiError { override name = "InvalidRequestError"; }
/** 422 `IDEMPOTENCY_KEY_REUSED`: the key (or event id) was used with another body. */
export class IdempotencyKeyReusedError extends InvalidRequestError { override name = "IdempotencyKeyReusedError"; }
/** 413 `BODY_TOO_LARGE`. */
export class BodyTooLargeError extends ApiError { override name = "BodyTooLargeError"; }
/** 401 `UNAUTHENTICATED`. */
export class AuthenticationError extends ApiError { override name = "AuthenticationError"; }
/** 403 `FORBIDDEN`: the key's role (or a worker key's scope) may not do this. */
export class PermissionDeniedError extends ApiError { override name = "PermissionDeniedError"; }
/** 404 `NOT_FOUND`: no such resource, or not this tenant's. */
export class NotFoundError extends ApiError { override name = "NotFoundError"; }
/** 409. */
export class ConflictError extends ApiError { override name = "ConflictError"; }
/** 409 `LEASE_STALE`: the lease token is not the current one; nothing changed. */
export class LeaseStaleError extends ConflictError { override name = "LeaseStaleError"; }
/** 409 `OPERATION_DONE`: the operation already ended. */
export class OperationDoneError extends ConflictError { override name = "OperationDoneError"; }
/** 409 `IDEMPOTENCY_KEY_IN_USE`: the first request with this key is still running. */
export class IdempotencyKeyInUseError extends ConflictError { override name = "IdempotencyKeyInUseError"; }
/** 409 `DELIVERY_SUCCEEDED`: a delivery that succeeded cannot be skipped. */
export class DeliverySucceededError extends ConflictError { override name = "DeliverySucceededError"; }
/** 409 `DELIVERY_IN_FLIGHT`: the delivery's attempt is in flight; skip it once that attempt ended. */
export class DeliveryInFlightError extends ConflictError { override name = "DeliveryInFlightError"; }
/** 429 `RATE_LIMITED`. */
export class RateLimitedError extends ApiError { override name = "RateLimitedError"; }
/** 503 `OVERLOADED` or `REQUEST_TIMEOUT`. */
export class UnavailableError extends ApiError { override name = "UnavailableError"; }
/** 500 `INTERNAL`. */
export class InternalError extends ApiError { override name = "InternalError"; }

type ApiErrorClass = new (status: number, problem: ProblemDetails, retryAfter?: number) => ApiError;

const BY_CODE: Record<string, ApiErrorClass> = {
  INVALID_JSON: InvalidRequestError,
  INVALID_REQUEST: InvalidRequestError,
  SCHEMA_VIOLATION: InvalidRequestError,
  LIMIT_REACHED: InvalidRequestError,
  IDEMPOTENCY_KEY_REUSED: IdempotencyKeyReusedError,
  BODY_TOO_LARGE: BodyTooLargeError,
  UNAUTHENTICATED: AuthenticationError,
  FORBIDDEN: PermissionDeniedError,
  NOT_FOUND: NotFoundError,
  LEASE_STALE: LeaseStaleError,
  OPERATION_DONE: OperationDoneError,
  IDEMPOTENCY_KEY_IN_USE: IdempotencyKeyInUseError,
  DELIVERY_SUCCEEDED: DeliverySucceededError,
  DELIVERY_IN_FLIGHT: DeliveryInFlightError,
  RATE_LIMITED: RateLimitedError,
  OVERLOADED: UnavailableError,
  REQUEST_TIMEOUT: UnavailableError,
  INTERNAL: InternalError,
};

const BY_STATUS: Record<number, ApiErrorClass> = {
  400: InvalidRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: BodyTooLargeError,
  422: InvalidRequestError,
  429: RateLimitedError,
  500: InternalError,
  503: UnavailableError,
};

export function apiError(status: number, body: unknown, retryAfter?: number): ApiError {
  const problem: ProblemDetails = body !== null && typeof body === "object" ? (body as ProblemDetails) : {};
  const Class = (problem.code !== undefined ? BY_CODE[problem.code] : undefined) ?? BY_STATUS[status] ?? ApiError;
  return new Class(status, problem, retryAfter);
}

/** `Herald.wait` gave up; `operation` is the operation as last seen. */
export class WaitTimeoutError extends HeraldError {
  override name = "WaitTimeoutError";
  constructor(
    readonly operationId: string,
    readonly operation: Operation | undefined,
  ) {
    super(`operation ${operationId} was not done within the wait timeout`);
  }
}
