// The REST API of the demo (see docs/web.md). Every call sends the identity cookie. The
// conversation list, the snapshot and the socket are the conversation router's, at /api.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(typeof detail === "string" ? detail : `${code} (${status})`);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    // fetch rejects only when no answer came at all: the server is down or the network is.
    throw new ApiError(0, "unreachable", "the server cannot be reached (is it running?)");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error || "error", data.detail);
  return data;
}

export const api = {
  me: () => request("GET", "/api/me"),
  conversations: () => request("GET", "/api/conversations"),
  create: (title) => request("POST", "/api/conversations", title ? { title } : {}),
  snapshot: (id) => request("GET", `/api/conversations/${encodeURIComponent(id)}`),
  rename: (id, title) => request("PATCH", `/api/conversations/${encodeURIComponent(id)}`, { title }),
  remove: (id) => request("DELETE", `/api/conversations/${encodeURIComponent(id)}`),
  files: () => request("GET", "/api/files"),
  file: (path) => request("GET", `/api/files/content?path=${encodeURIComponent(path)}`),
};

// The conversation's socket (the router's), for sagents-client.js's connect().
export const socketPath = (id) => `/api/conversations/${encodeURIComponent(id)}/ws`;
