export { generationWorkflow } from './generation';
export { webhookDeliveryWorkflow } from './webhook-delivery';
export { reconcilerWorkflow } from './reconciler';
export { retentionWorkflow } from './retention';
