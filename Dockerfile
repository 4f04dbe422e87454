# The application image: one image, four roles (api, worker, dispatcher, simulator) chosen by the command.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
# The service's Node flags (src/lib/node-options.ts, which a test keeps equal to this line).
ENV NODE_OPTIONS="--max-semi-space-size=64"
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY drizzle ./drizzle
COPY src ./src
USER node
EXPOSE 3000 4000
# node itself with tsx's loader, not tsx's CLI: `docker stop`'s SIGTERM reaches the service, which drains and exits (the CLI
# would relay it and SIGKILL a child slow to acknowledge).
CMD ["node", "--import", "tsx", "src/api/main.ts"]
