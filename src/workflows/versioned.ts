import { setWorkflowOptions } from '@temporalio/workflow';
import { emailDigestWorkflow, generationWorkflow, reconcilerWorkflow, retentionWorkflow, webhookDeliveryWorkflow } from './index';

/**
 * The workflows as a versioned worker runs them (src/worker-deployment.ts; docs/decisions.md, "Worker Deployment
 * Versioning"): each declares its versioning behaviour. An unversioned worker (WORKER_VERSIONING=false) loads ./index
 * instead, as the server refuses a behaviour from a worker without a deployment version.
 */
export { generationWorkflow, webhookDeliveryWorkflow, reconcilerWorkflow, retentionWorkflow, emailDigestWorkflow };

// A job runs for minutes and is billed once: it ends on the code it began with, and a version drains when its jobs have.
setWorkflowOptions({ versioningBehavior: 'PINNED' }, generationWorkflow);
// A delivery sleeps up to 28 hours through its retry schedule, and the schedules start a run every interval: pinned, they
// would keep an old version from draining for a day. They move to the current version at their next workflow task,
// where a change to their commands goes behind patched() (docs/decisions.md, "Replay safety").
setWorkflowOptions({ versioningBehavior: 'AUTO_UPGRADE' }, webhookDeliveryWorkflow);
setWorkflowOptions({ versioningBehavior: 'AUTO_UPGRADE' }, reconcilerWorkflow);
setWorkflowOptions({ versioningBehavior: 'AUTO_UPGRADE' }, retentionWorkflow);
// A user's digest lives across deploys (it continues as new after 50 mails, ends after 10 s idle): the same.
setWorkflowOptions({ versioningBehavior: 'AUTO_UPGRADE' }, emailDigestWorkflow);
