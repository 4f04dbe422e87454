import type { TerminalStatus } from './generation-state';

/**
 * Every way a generation can end other than success. Adding a code fails to compile until `classifyError` maps it.
 * Pure: safe inside the workflow sandbox.
 */
export const GENERATION_ERROR_CODES = [
  'content_policy_violation',
  'invalid_input',
  'backend_internal_error',
  'gpu_unavailable',
  'backend_unavailable',
  'queue_timeout',
  'generation_timeout',
  'canceled_by_user',
  'insufficient_credits',
] as const;
export type GenerationErrorCode = (typeof GENERATION_ERROR_CODES)[number];

export interface GenerationError {
  code: GenerationErrorCode;
  message: string;
  /** Whether submitting the same request again could succeed. */
  retryable: boolean;
}

export interface ErrorClass {
  status: Extract<TerminalStatus, 'failed' | 'canceled' | 'expired'>;
  /** True when a new generation attempt within the same job may succeed. */
  retryAttempt: boolean;
  retryable: boolean;
}

export function classifyError(code: GenerationErrorCode): ErrorClass {
  switch (code) {
    case 'content_policy_violation':
    case 'invalid_input':
      return { status: 'failed', retryAttempt: false, retryable: false };
    case 'backend_internal_error':
    case 'gpu_unavailable':
    case 'backend_unavailable':
      return { status: 'failed', retryAttempt: true, retryable: true };
    case 'queue_timeout':
      return { status: 'expired', retryAttempt: false, retryable: true };
    case 'generation_timeout':
      return { status: 'failed', retryAttempt: false, retryable: true };
    case 'canceled_by_user':
      return { status: 'canceled', retryAttempt: false, retryable: false };
    case 'insufficient_credits':
      return { status: 'failed', retryAttempt: false, retryable: false };
    default: {
      const unclassified: never = code;
      throw new Error(`unclassified generation error code ${String(unclassified)}`);
    }
  }
}

export function generationError(code: GenerationErrorCode, message: string): GenerationError {
  return { code, message, retryable: classifyError(code).retryable };
}

/** Maps the backend's own error codes onto ours. */
export function fromBackendErrorCode(code: string): GenerationErrorCode {
  switch (code) {
    case 'content_policy_violation':
      return 'content_policy_violation';
    case 'invalid_input':
      return 'invalid_input';
    case 'gpu_unavailable':
      return 'gpu_unavailable';
    default:
      return 'backend_internal_error';
  }
}
