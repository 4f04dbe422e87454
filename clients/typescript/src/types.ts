import type { components, operations } from './schema.js';

/** The wire's resources under their product names, all from the generated schema (src/schema.ts). */
type Schemas = components['schemas'];

export type Generation = Schemas['Generation'];
export type GenerationStatus = Generation['status'];
export type GenerationError = Schemas['GenerationError'];
export type CreateGenerationRequest = Schemas['CreateGenerationRequest'];
export type GenerationEstimate = Schemas['GenerationEstimate'];
export type GenerationList = Schemas['GenerationList'];
export type ListGenerationsQuery = NonNullable<operations['listGenerations']['parameters']['query']>;
export type Batch = Schemas['Batch'];
export type BatchList = Schemas['BatchList'];
export type CreateBatchRequest = Schemas['CreateBatchRequest'];
export type ListBatchesQuery = NonNullable<operations['listBatches']['parameters']['query']>;
export type Usage = Schemas['Usage'];
export type NotificationSettings = Schemas['NotificationSettings'];
export type NotificationSettingsRequest = Schemas['NotificationSettingsRequest'];
export type Notification = Schemas['Notification'];
export type NotificationList = Schemas['NotificationList'];
export type NotificationsQuery = NonNullable<operations['listNotifications']['parameters']['query']>;
export type WebhookEvent = Schemas['WebhookEvent'];
export type ErrorBody = Schemas['Error'];

export type GenerationEventData = Schemas['GenerationEventData'];
export type QueuePositionEventData = Schemas['QueuePositionEventData'];
export type ResyncEventData = Schemas['ResyncEventData'];
export type StreamClosedEventData = Schemas['StreamClosedEventData'];

/** An event of `GET /v1/events` or `GET /v1/generations/{id}/events`, told apart by `type`. */
export type StreamEvent =
  | { type: `generation.${GenerationStatus | 'updated'}`; id: string; data: GenerationEventData }
  | { type: 'generation.queue_position'; id: undefined; data: QueuePositionEventData }
  | { type: 'stream.resync_required'; id: string; data: ResyncEventData }
  | { type: 'stream.closed'; id: undefined; data: StreamClosedEventData };

export const TERMINAL_STATUSES: readonly GenerationStatus[] = ['succeeded', 'failed', 'canceled', 'expired'];
export const isTerminal = (status: GenerationStatus): boolean => TERMINAL_STATUSES.includes(status);
