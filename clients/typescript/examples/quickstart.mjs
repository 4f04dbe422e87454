import { createVideogenClient, isTerminal } from '@videogen/client';

const client = createVideogenClient({ baseUrl: process.env.VIDEOGEN_URL ?? 'http://127.0.0.1:3000', apiKey: process.env.VIDEOGEN_API_KEY, retryRateLimited: true });
const { credits } = await client.generations.estimate({ prompt: 'a red fox running through snow' });
const job = await client.generations.create({ prompt: 'a red fox running through snow' });
for await (const event of client.events({ generationId: job.id })) {
  if (event.type !== 'generation.queue_position') console.log(event.type, `${Math.round(event.data.progress * 100)}%`);
  if (event.data.status && isTerminal(event.data.status)) break;
}
const done = await client.generations.get(job.id);
console.log(done.id, done.status, done.video_url, `${credits} credits`);
