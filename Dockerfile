# The application image: one image, three roles (api, worker, dispatcher) chosen by the command, holding src/ and its
# production dependencies only. The backend simulator, a stand-in for a real generation backend that docker-compose.yml
# runs, is the separate `simulator` target: it adds simulator/ to the same layers, and is never in the production image.
# The TypeScript client package (clients/typescript), built to ESM: the API serves it to the status page at /client/.
FROM node:20-bookworm-slim AS client
WORKDIR /app
COPY package.json package-lock.json ./
COPY clients/typescript/package.json ./clients/typescript/
RUN npm ci --workspace clients/typescript --include-workspace-root=false --no-audit --no-fund
COPY clients/typescript ./clients/typescript
RUN npm run build --workspace clients/typescript

FROM node:20-bookworm-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production
# The service's Node flags (scripts/lib/node-options.ts, which a test keeps equal to this line).
ENV NODE_OPTIONS="--max-semi-space-size=64"
COPY package.json package-lock.json ./
COPY clients/typescript/package.json ./clients/typescript/
RUN npm ci --omit=dev --no-audit --no-fund
COPY --from=client /app/clients/typescript/dist ./clients/typescript/dist
COPY tsconfig.json ./
COPY drizzle ./drizzle
COPY src ./src
# The workflow code, bundled once here (dist/workflows): a worker loads it instead of bundling at every start, and
# refuses to start outside development without it (src/workflow-bundle.ts).
RUN node --import tsx src/build-workflows.ts
# The commit the image is built from (`--build-arg GIT_SHA=$(git rev-parse HEAD)`): part of the workers' build id, as the
# image has no git (src/worker-deployment.ts). Last, so a new commit rebuilds no earlier layer.
ARG GIT_SHA=""
ENV BUILD_GIT_SHA=${GIT_SHA}
USER node
EXPOSE 3000

# `docker build --target simulator .`: the backend simulator on port 4000 (docker-compose.yml's `simulator` service).
FROM runtime AS simulator
COPY simulator ./simulator
EXPOSE 4000
CMD ["node", "--min-semi-space-size=16", "--import", "tsx", "simulator/main.ts"]

# The default target, last: the production image.
FROM runtime AS production
# node itself with tsx's loader, not tsx's CLI: `docker stop`'s SIGTERM reaches the service, which drains and exits (the CLI
# would relay it and SIGKILL a child slow to acknowledge).
CMD ["node", "--min-semi-space-size=16", "--import", "tsx", "src/api/main.ts"]
