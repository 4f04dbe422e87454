import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Custom search attributes, registered on the dev server by scripts/temporal.sh; operators filter on them in the Web UI. */
export const SA_USER_ID = defineSearchAttributeKey('VgUserId', SearchAttributeType.KEYWORD);
export const SA_TIER = defineSearchAttributeKey('VgTier', SearchAttributeType.KEYWORD);
export const SA_STATUS = defineSearchAttributeKey('VgStatus', SearchAttributeType.KEYWORD);
export const SA_BACKEND_JOB_ID = defineSearchAttributeKey('VgBackendJobId', SearchAttributeType.KEYWORD);

/** `name=Type` pairs for `temporal server start-dev --search-attribute`. */
export const SEARCH_ATTRIBUTE_FLAGS = [SA_USER_ID, SA_TIER, SA_STATUS, SA_BACKEND_JOB_ID].map((k) => `${k.name}=Keyword`);
