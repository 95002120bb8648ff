// What tsc must reject, so that a pass of scripts/test-sdk-types means something: `null` where
// the SDK says "optional string", and a string where it has a number.
import type { V2 } from "@meeting-baas/sdk";

export const nullOptional: V2.BotWebhookCompletedDataParticipantsItem = {
  name: "Maya Chen",
  id: 101,
  profile_picture: null,
};

export const stringNumber: V2.BotWebhookCompletedDataParticipantsItem = {
  name: "Maya Chen",
  id: "101",
};
